"""watcher/run/pending.py: the checkpoint to save when required outputs have not written everything:
`emitted` stops before the first transaction one of them has not acknowledged, `resume` is a place
taken before that transaction was completed; without required outputs it is where the service is."""

from __future__ import annotations

from watcher.run.checkpoint import Checkpoint, Mark
from watcher.run.pending import Pending, Place
from watcher.sinks.base import Sink


class Acks(Sink):
    """A required output whose acknowledgements the test sets."""

    def __init__(self, name: str = "r") -> None:
        super().__init__(name, 10)
        self.required = True
        self.n = 0

    def acked(self) -> int:
        return self.n


def m(pos: int) -> Mark:
    return Mark("fp", 1.0, pos, "cap")


def mark_of(pos: int) -> Mark | None:
    return m(pos)


def place(resume: int, last: int) -> Place:
    return Place(m(resume), resume, last)


def test_without_required_outputs_it_is_where_the_service_is() -> None:
    p = Pending(None)
    p.delivered(100, ())  # no required output: nothing noted
    assert len(p) == 0
    assert p.checkpoint(place(90, 120), m(120), mark_of) == (Checkpoint(m(90), m(120), 0.0), 90)


def test_emitted_stops_before_the_first_unacknowledged_and_resume_is_an_earlier_place() -> None:
    r = Acks()
    p = Pending(None)
    p.start_at(place(24, -1))
    # Checkpoint 1 at last_pos 50: transactions done at 40 (record 1) and 50 (record 2) delivered.
    p.delivered(40, ((r, 1),))
    p.delivered(50, ((r, 2),))
    r.n = 2
    assert p.checkpoint(place(45, 50), m(50), mark_of) == (Checkpoint(m(45), m(50), 0.0), 45)
    # Records 3..5 (done at 60, 70, 80); only record 3 written; a checkpoint at last_pos 80.
    for i, pos in enumerate((60, 70, 80), start=3):
        p.delivered(pos, ((r, i),))
    r.n = 3
    assert len(p) == 3
    # The first unacknowledged was completed at 70: emitted 69; resume: the place saved at 50
    # (before 70), since the place taken now (at 80) is after it.
    assert p.checkpoint(place(75, 80), m(80), mark_of) == (Checkpoint(m(45), m(69), 0.0), 45)
    # Record 4 written: the first unacknowledged is at 80; the place at 80 is not before it.
    r.n = 4
    assert p.checkpoint(place(75, 80), m(80), mark_of) == (Checkpoint(m(45), m(79), 0.0), 45)
    # More analysed (record 6 done at 95, a place at 90 taken before it), then 5 written.
    p.checkpoint(place(85, 90), m(90), mark_of)
    p.delivered(95, ((r, 6),))
    r.n = 5
    assert p.checkpoint(place(92, 95), m(95), mark_of) == (Checkpoint(m(85), m(94), 0.0), 85)
    r.n = 6
    assert p.checkpoint(place(92, 95), m(95), mark_of) == (Checkpoint(m(92), m(95), 0.0), 92)
    assert len(p) == 0


def test_a_first_start_resumes_at_the_first_record_and_a_restart_at_the_saved_mark() -> None:
    r = Acks()
    first = Pending(None)
    first.start_at(place(24, -1))
    first.delivered(500, ((r, 1),))  # the whole first batch is unwritten
    assert first.checkpoint(place(600, 600), m(600), mark_of) == (Checkpoint(m(24), m(499), 0.0), 24)
    again = Pending(m(7))  # a restart: the saved resume holds (its position is not this run's)
    again.start_at(place(24, -1))
    again.delivered(500, ((r, 1),))
    assert again.checkpoint(place(600, 600), m(600), mark_of) == (Checkpoint(m(7), m(499), 0.0), None)
    nothing = Pending(None)  # no record analysed yet and nothing saved: keep what is there
    nothing.delivered(500, ((r, 1),))
    assert nothing.checkpoint(place(600, 600), m(600), mark_of) is None


def test_every_required_output_must_have_written_and_a_replaced_one_owes_nothing() -> None:
    a, b = Acks("a"), Acks("b")
    p = Pending(m(1))
    p.delivered(10, ((a, 1), (b, 1)))
    p.delivered(20, ((a, 2), (b, 1)))  # the second record went only to a
    a.n = 2
    assert p.checkpoint(place(20, 20), m(20), mark_of) == (Checkpoint(m(1), m(9), 0.0), None)
    b.n = 1
    assert p.checkpoint(place(20, 20), m(20), mark_of) == (Checkpoint(m(20), m(20), 0.0), 20)
    p.delivered(30, ((a, 3), (b, 2)))
    p.outputs_replaced({a})
    a.n = 3
    assert p.checkpoint(place(30, 30), m(30), mark_of) == (Checkpoint(m(30), m(30), 0.0), 30)
