"""The bench's CPU accounting: py-spy stacks grouped by library and function, CPU per message by role."""

from __future__ import annotations

from collections import Counter

from imray.bench.profile import CpuSnapshot, _read_raw, breakdown, cpu_per_message, library

SITE = "/work/.venv/lib/python3.11/site-packages"
RAW = f"""\
run (/usr/lib/python3.11/threading.py);handle ({SITE}/imray/actors/socket_server.py);parse_frame \
({SITE}/imray/protocol/frames.py);validate_json ({SITE}/pydantic/main.py) 6
run (/usr/lib/python3.11/threading.py);handle ({SITE}/imray/actors/socket_server.py);send \
({SITE}/websockets/protocol.py) 3
_run_once (/usr/lib/python3.11/asyncio/base_events.py) 1
not a stack line
"""


def test_a_frame_file_is_named_by_its_library():
    assert library(f"{SITE}/websockets/asyncio/connection.py") == "websockets"
    assert library(f"{SITE}/ray/_private/worker.py") == "ray"
    assert library("/work/main/imray/actors/session.py") == "imray.actors"
    assert library("/usr/lib/python3.11/asyncio/base_events.py") == "stdlib asyncio"
    assert library("/usr/lib/python3.11/threading.py") == "stdlib threading"


def test_samples_are_split_by_where_they_are_spent_and_what_they_are_for():
    counts = _read_raw(RAW)
    assert sum(counts.values()) == 10  # the line that is not a stack is left out
    got = breakdown(counts)
    assert got["samples"] == 10
    assert got["self_by_library_pct"] == {"pydantic": 60.0, "websockets": 30.0, "stdlib asyncio": 10.0}
    assert got["self_by_function_pct"]["pydantic:validate_json"] == 60.0
    # inclusive: a function counts every sample it is on the stack of, once
    assert got["imray_inclusive_pct"] == {"actors.handle": 90.0, "protocol.parse_frame": 60.0}


def test_no_samples_is_said_as_such():
    assert breakdown(Counter()) == {"samples": 0}


def test_cpu_per_message_counts_each_process_from_its_own_start():
    before = CpuSnapshot({(10, 1.0): ("socket nodes", 2.0), (11, 1.0): ("shards", 1.0)}, driver=0.5, at=100.0)
    after = CpuSnapshot({(10, 1.0): ("socket nodes", 3.0), (11, 1.0): ("shards", 1.5),
                         (12, 5.0): ("loaders", 0.25)},  # started meanwhile: all its CPU counts
                        driver=0.5, at=102.0)
    got = cpu_per_message(before, after, messages=1000)
    assert got["roles"]["socket nodes"] == {"us_per_msg": 1000.0, "cores": 0.5}
    assert got["roles"]["shards"] == {"us_per_msg": 500.0, "cores": 0.25}
    assert got["roles"]["loaders"]["us_per_msg"] == 250.0
    assert "bench driver" not in got["roles"]  # it spent nothing
    assert got["server_us_per_msg"] == 1500.0  # loaders and the driver are not the server's
    assert cpu_per_message(before, after, messages=0) == {}
