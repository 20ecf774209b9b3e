"""A seconds-long `imray bench` against the test stack: it must pass its audit. No timing is asserted."""

from __future__ import annotations

from conftest import STACK

from imray.bench.report import markdown
from imray.bench.run import BenchOptions, bench

# Enough sessions that each socket node's CPU for connecting them is several of /proc's 10-ms ticks:
# with 40, a node's share (~8 ms) could read 0 and leave the role out of the table.
SESSIONS = 200


def test_bench_smoke_run_passes_its_audit(stack, tmp_path):
    options = BenchOptions(scenarios=("one2one", "fanout", "connections", "storm", "http"), duration=1.5, pairs=2,
                           window=4, processes=1, http_concurrency=2, fractions=(0.5,), group_size=6,
                           sessions=SESSIONS, session_users=40, storm_group=4, storm_window=1.0, storm_messages=2,
                           sources=3,
                           target=stack.base_url, results=tmp_path, progress=False,
                           centrifugo=False,  # the peer is built by `make bench`, not by the test command
                           profile=True)
    results = bench(options)
    audit = results["audit"]
    assert audit["ok"], audit
    assert audit["acked"] > 0 and audit["lost"] == 0 and audit["duplicates"] == 0
    imray = results["one2one"]["imray"]
    assert imray["max_run"]["acked"] > 0 and imray["max_run"]["errors"] == 0
    assert results["one2one"]["relay"]["max_run"]["acked"] > 0  # the baseline ran in the same invocation
    roles = imray["cpu"]["roles"]  # the test's cluster is this process's children: each part's CPU is read
    assert roles["socket nodes"]["us_per_msg"] > 0 and roles["shards"]["us_per_msg"] > 0, roles
    assert results["one2one"]["relay"]["cpu"]["roles"]["baselines"]["us_per_msg"] > 0
    sampled = imray["profile"]  # and py-spy sampled the hot path
    assert sampled["socket nodes"]["samples"] > 0 and "shards" in sampled, sampled
    assert any(k.startswith("actors.") for k in sampled["socket nodes"]["imray_inclusive_pct"]), sampled
    fanout = results["fanout"]
    assert fanout["acked"] > 0 and fanout["members_with_all"] == fanout["members"] == 5  # every member got all
    conns = results["connections"]
    assert conns["connected"] == SESSIONS and conns["connect_failed"] == 0
    assert conns["rss_per_session_kb"] is not None  # the test process is the cluster's driver: memory is read
    storm = conns["storm"]  # every session came back and fetched 2 messages of its group, whole
    assert storm["current"] == SESSIONS and storm["failed"] == 0 and storm["gaps"] == 0 and storm["duplicates"] == 0
    for cpu in (conns["connect_cpu"], storm["cpu"]):  # each session's CPU by role: the loaders' and the nodes'
        assert cpu["messages"] == SESSIONS and cpu["roles"]["socket nodes"]["us_per_msg"] > 0, cpu
        assert cpu["roles"]["loaders"]["us_per_msg"] > 0, cpu
    assert "| CPU µs per session, a storm's resume: the most costly roles |" in markdown(results)
    http = results["http"]
    assert http["login_errors"] == 0 and http["logins_per_s"] > 0
    assert http["hash_ceiling"]["verifications_per_s"] > 0  # the logins' baseline, in the same run
    if STACK == "real":  # the history reads' baseline: a bare FastAPI + PyMySQL on the same database
        assert http["history_baseline"]["history_per_s"] > 0 and http["history_baseline"]["errors"] == 0, http
        if stack.settings.database_url.startswith("mysql+mysqldb"):  # and through imray's own driver
            same = http["history_baseline_same_driver"]
            assert same["history_per_s"] > 0 and same["errors"] == 0, http
            assert "bare FastAPI + mysqlclient, imray's driver" in markdown(results)
    else:
        assert "skipped" in http["history_baseline"]
    assert len(results["targets"]) == 7 and "## Issue 21's targets, in this run" in markdown(results)
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["latency.png", "results.json", "results.md"]
    assert "Audit: PASS" in markdown(results)


def test_an_http_run_alone_reads_pages_it_wrote_first(stack):
    options = BenchOptions(scenarios=("http",), duration=1.0, pairs=2, processes=1, http_concurrency=2,
                           target=stack.base_url, results=None, progress=False, centrifugo=False)
    results = bench(options)
    assert results["audit"]["ok"] and results["audit"]["acked"] == 2 * 50, results["audit"]
    assert results["http"]["history_errors"] == 0 and results["http"]["history_per_s"] > 0
