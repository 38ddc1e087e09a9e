"""watcher/text/faults.py: one line per failed packet with file and offset, at most MAX_LINES a
window, then the count."""

from __future__ import annotations

from watcher.text.faults import MAX_LINES, WINDOW_SECONDS, FaultLines, fault_line


def test_lines_are_rate_limited_and_the_rest_counted() -> None:
    said: list[str] = []
    now = [100.0]
    lines = FaultLines(said.append, lambda: now[0])
    for i in range(MAX_LINES + 5):
        lines.report("/spool/cap.pcap", 24 + i, "KeyError: 1")
    assert said == [fault_line("/spool/cap.pcap", 24 + i, "KeyError: 1") for i in range(MAX_LINES)]
    assert said[0] == ("/spool/cap.pcap offset 24: analysing this packet failed (KeyError: 1); its connection was "
                       "closed (reason internal_error) and the analysis goes on; this is a bug in pcapwatch: please "
                       "report it with this packet")
    lines.tick()  # the window is not over: nothing
    assert len(said) == MAX_LINES
    now[0] += WINDOW_SECONDS
    lines.tick()
    assert said[-1] == ("5 more packets failed to be analysed (at most 10 lines every 60 s are written); each cost "
                        "its connection only")
    lines.report("b", 1, "E")  # a new window: said again
    assert said[-1] == fault_line("b", 1, "E") and len(said) == MAX_LINES + 2
    lines.flush()
    assert len(said) == MAX_LINES + 2  # nothing held
