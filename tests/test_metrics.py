"""Application metrics (issue 20): after a short chat, every series the Grafana dashboard
(deploy/grafana/imray.json) queries is in a real scrape of the Ray nodes' metrics agents, and the
chat's own figures are there: messages acked and delivered, logins ok and failed, sessions, frames
refused for their rate."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import ray
from support import Api, Socket, direct

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "imray.json"
SAMPLE = re.compile(r"^(ray_imray_\w+)(\{[^}]*\})? (\S+)$")


def _queried() -> set[str]:
    """The series names the dashboard's queries read."""
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"ray_imray_\w+", expr)}


async def _scrape() -> dict[str, float]:
    """Every live node's imray series, summed over their labels (and over nodes)."""
    totals: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for node in ray.nodes():
            if not node["Alive"] or not node.get("MetricsExportPort"):
                continue
            r = await http.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics")
            for line in r.text.splitlines():
                if (m := SAMPLE.match(line)) is not None:
                    totals[m.group(1)] = totals.get(m.group(1), 0.0) + float(m.group(3))
    return totals


async def test_every_series_the_dashboard_charts_is_scraped_after_a_short_chat(stack) -> None:
    wanted = _queried()
    assert len(wanted) >= 11, wanted  # the dashboard charts every metric issue 20 names
    api = Api(stack.base_url)
    alice, bob = await api.user(), await api.user()
    conv = direct(alice.user_id, bob.user_id)
    a = await Socket.open(alice.socket_url, alice.access_token)
    b = await Socket.open(bob.socket_url, bob.access_token)
    try:
        for i in range(20):
            assert (await a.send_text(conv, f"hello {i}"))["type"] == "ack"
        await b.wait(lambda fs: sum(f.get("type") == "msg" for f in fs) >= 20)
        r = await api.http.post("/oauth2/token", data={"grant_type": "password", "username": alice.username,
                                                       "password": "not the password", "client_id": "imray-app"})
        assert r.status_code == 400
        for _ in range(50):  # over the typing rate's burst (20/s for 2 s): some are refused, none closes
            await a.send_json({"type": "typing", "conv": conv})
        await a.wait(lambda fs: any(f.get("code") == "rate_limited" for f in fs))

        deadline = time.monotonic() + 90  # Ray's agents export every few seconds
        while True:
            found = await _scrape()
            missing = {name for name in wanted if name not in found}
            # Gauges are set every few seconds, counters as things happen: wait for the chat's figures.
            chat_seen = (found.get("ray_imray_messages_acked_total", 0) >= 20
                         and found.get("ray_imray_messages_delivered_total", 0) >= 20
                         and found.get("ray_imray_sessions", 0) >= 2
                         and found.get("ray_imray_rate_limited_total", 0) >= 1
                         and found.get("ray_imray_logins_total", 0) >= 3)
            if not missing and chat_seen:
                break
            assert time.monotonic() < deadline, f"not scraped: {sorted(missing)}; found {found}"
            await asyncio.sleep(2)
        assert found["ray_imray_commit_ms_count"] >= 1 and found["ray_imray_ack_ms_count"] >= 1
        assert found["ray_imray_sessions"] >= 2
        assert found["ray_imray_rate_limited_total"] >= 1
        assert found["ray_imray_logins_total"] >= 3  # two logins and a wrong password, at least
    finally:
        await a.close()
        await b.close()
        await api.close()
