"""Keep the garbage collector's full passes short in long-lived actors and replicas.

A full (generation 2) collection walks every tracked object, and after imports (Ray, SQLAlchemy,
websockets, pydantic) a worker holds hundreds of thousands that live forever. Measured during the
1:1 benchmark: full passes of 117 ms in the shard and 131-144 ms in the socket nodes, five or six
per minute, each one a stall of every message in flight. Freezing what exists once the process is
set up moves it out of the collector's sight (it is never freed, which it never would have been).
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once, at the end of an actor's or replica's setup."""
    gc.collect()  # what is garbage already should not be frozen with the rest
    gc.freeze()


# CPython considers a full pass after every 10 middle ones (about 70,000 net allocations of tracked
# objects). A socket node holds about 70 per session, so while sessions arrive it walked its whole
# heap every ~1,000 connects: measured with 10,000 sessions a node, 35 full passes of up to 0.8 s
# (12.2 s of stalls per node over two connect-and-storm rounds of 20,000 sessions). Every 100
# middle passes: 4 full passes, 4.4 s of stalls, connects 15.2 -> 13.1 s, and the same RSS per
# session (17 KB), since what it walks is mostly live sessions, not garbage.
FULL_PASS_EVERY = 100


def collect_fully_less_often() -> None:
    """For processes whose heap grows with their clients (socket nodes): fewer full passes."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
