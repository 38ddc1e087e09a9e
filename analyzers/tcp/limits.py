"""The bounds TCP reassembly holds to, each with its reason (see reassembly.py)."""

from __future__ import annotations

SEQ_MOD = 1 << 32
SEQ_HALF = 1 << 31
# Out-of-order bytes one direction may hold while waiting for a missing segment. Most holes close
# within a window (a late segment fills it, or it is declared lost); 1 MiB covers a full default
# Linux receive window at gigabit RTTs.
MAX_PENDING_BYTES_PER_STREAM = 1 << 20
# Separate runs of buffered bytes one direction may hold. Linux's out-of-order queue is bounded by
# the receive buffer at a few hundred bytes of truesize per segment, a few thousand segments at the
# default 6 MB; runs that touch merge, so only a hostile or very lossy stream needs many.
MAX_PENDING_PIECES_PER_STREAM = 2048
# What one buffered run costs beyond its bytes (its offsets in two lists, the run object and its
# two bytearrays): 252 bytes measured with tracemalloc on CPython 3.11. Counted in both budgets,
# so that a flood of 1-byte segments is bounded by memory, not by payload.
PIECE_OVERHEAD = 256
# What one segment's arrival time costs while it waits in a run (an (offset, time) tuple in a
# list, see `Run.marks`): about 116 bytes.
MARK_OVERHEAD = 120
# Arrival times one direction keeps for its buffered bytes (see `Run.marks`); past this, the run
# a segment joins keeps only its latest time (its bytes are then delivered a little late). Only a
# flood of tiny segments gets here: 2,048 segments are 3 MB of full-sized ones.
MAX_STREAM_MARKS = 2048
# Bookkeeping (runs and marks) one direction may hold: every run at its cap with a mark, and the
# marks at theirs. A flood of tiny segments reaches this long before its bytes reach theirs.
MAX_PENDING_OVERHEAD_PER_STREAM = MAX_PENDING_PIECES_PER_STREAM * (PIECE_OVERHEAD + MARK_OVERHEAD) + (
    MAX_STREAM_MARKS * MARK_OVERHEAD)
# How long (capture time) a hole behind the peer's ACK stays open for the segment to turn up later
# in the capture. Reordering by multi-queue NICs and `-i any` is microseconds to milliseconds, a
# merge of two hosts' captures adds their clock skew (milliseconds under NTP); a second leaves a
# wide margin, and waiting longer only delays the records behind a hole the capture really lost.
HOLE_WAIT_SECONDS = 1.0
# Bytes buffered past such a hole after which it is declared lost without waiting longer: a
# segment reordered in capture is a few packets late, and a packet captured on the sending host
# with segmentation offload (or after GRO on the receiving one) holds up to 64 KB: eight of them.
HOLE_WAIT_BYTES = 512 << 10
# Packets of the connection after which such a hole is declared lost: capture reordering moves a
# packet by a few places (the measurements used windows of up to eight); thirty-two
# leaves a margin and keeps records behind a real loss from waiting on the clock. Every packet of
# a connection with a waiting hole reaches the stream (the peer's ACKs are ahead of it).
HOLE_WAIT_PACKETS = 32
# Segments with a wrong checksum kept aside per direction, in a flow whose checksums are right,
# until another copy of their bytes comes or their place would be declared lost: an insertion is
# one packet or a few; beyond this, they are taken as they come.
MAX_DOUBTFUL_PER_STREAM = 8
# An ACK further ahead than this is not about this stream's data (garbage, or a mix-up after
# sequence numbers were lost track of); a real window is far smaller.
MAX_ACK_AHEAD = 1 << 30
# Bytes acknowledged but never seen that the close reports as a gap: what a sender can have in
# flight beyond the last bytes captured (a large receive window). An ACK further ahead is not
# believed (a forged ACK would otherwise turn into a gap of its own choosing).
ACK_UNSEEN_SLACK = 1 << 20
# Delivered bytes kept to compare a retransmission with what was delivered first (an insertion:
# the first copy was one the receiver dropped). Retransmissions resend the oldest unacknowledged
# segment, normally within the last one or two segments delivered; 4 KiB per stream (8 KiB before a
# trim) keeps 100,000 connections' windows under 2 GB at worst and a few MB in practice.
RECENT_BYTES = 4096
