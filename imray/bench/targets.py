"""Issue 21's targets, judged from one bench run's results: each with its goal, the figure measured
and whether it is met (None: not measured in this run, with the reason)."""

from __future__ import annotations

from collections.abc import Callable

STORM_SESSIONS = 20000  # the storm target is for this many sessions; fewer are reported, not judged


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _verdict(name: str, goal: str, figure: str | None, met: bool | None, why: str = "") -> dict:
    return {"target": name, "goal": goal, "measured": figure if figure is not None else why or "not measured",
            "met": met}


def _one2one(results: dict) -> dict:
    real = results["stack"] == "real"
    goal = 0.5 if real else 0.6
    one = results.get("one2one") or {}
    ratio = one.get("centrifugo_ratio")
    name = f"1:1 msgs/s, {'MariaDB' if real else 'embedded'} stack, audit clean"
    if ratio is None:
        return _verdict(name, f">= {goal}x Centrifugo", None, None, "Centrifugo not in this run")
    audit_ok = results.get("audit", {}).get("ok", False)
    return _verdict(name, f">= {goal}x Centrifugo", f"{ratio}x ({one['imray']['max_rate']:,.0f} against "
                    f"{one['centrifugo']['max_rate']:,.0f}), audit {'PASS' if audit_ok else 'FAIL'}",
                    ratio >= goal and audit_ok)


def _fanout(results: dict) -> dict:
    fan = results.get("fanout") or {}
    ratio = fan.get("centrifugo_ratio")
    if ratio is None:
        return _verdict("fan-out deliveries/s", ">= 0.8x Centrifugo", None, None, "Centrifugo not in this run")
    return _verdict("fan-out deliveries/s", ">= 0.8x Centrifugo", f"{ratio}x ({fan['deliveries_per_s']:,.0f} against "
                    f"{fan['centrifugo']['deliveries_per_s']:,.0f})", ratio >= 0.8)


def _memory(results: dict) -> dict:
    conns = results.get("connections") or {}
    ratio = _ratio(conns.get("rss_per_session_kb"), conns.get("centrifugo_rss_per_connection_kb"))
    if ratio is None:
        return _verdict("memory per session", "<= 0.5x Centrifugo's per connection", None, None,
                        "Centrifugo or the sessions scenario not in this run")
    return _verdict("memory per session", "<= 0.5x Centrifugo's per connection",
                    f"{ratio}x ({conns['rss_per_session_kb']} against {conns['centrifugo_rss_per_connection_kb']} KB)",
                    ratio <= 0.5)


def _storm(results: dict) -> dict:
    conns = results.get("connections") or {}
    storm = conns.get("storm")
    goal = f"{STORM_SESSIONS:,} sessions all current <= 15 s, 0 errors"
    if not storm:
        return _verdict("reconnect storm", goal, None, None, "the storm scenario not in this run")
    bad = storm["errors"] + storm["failed"]
    figure = (f"{storm['current']:,} of {conns['sessions']:,} current in {storm['all_current_s']} s, "
              f"{bad} errors/failures")
    judged = conns["sessions"] >= STORM_SESSIONS
    return _verdict("reconnect storm", goal, figure,
                    storm["all_current_s"] <= 15 and bad == 0 and storm["current"] == conns["sessions"]
                    if judged else None)


def _ack_p99(results: dict) -> dict:
    steps = (results.get("one2one") or {}).get("imray", {}).get("steps", [])
    half = next((s for s in steps if s["fraction"] == 0.5), None)
    if half is None or half["ack_ms"]["p99"] is None:
        return _verdict("ack p99 at half the closed-loop maximum", "<= 25 ms", None, None,
                        "no 50 % open-loop step in this run")
    p99 = half["ack_ms"]["p99"]
    return _verdict("ack p99 at half the closed-loop maximum", "<= 25 ms",
                    f"{p99} ms at {half['achieved_rate']:,.0f} msgs/s", p99 <= 25)


def _logins(results: dict) -> dict:
    http = results.get("http") or {}
    ceiling = (http.get("hash_ceiling") or {}).get("verifications_per_s")
    if not ceiling:
        return _verdict("logins/s", ">= 0.8x the box's argon2 verifications/s", None, None,
                        (http.get("hash_ceiling") or {}).get("skipped", "the http scenario not in this run"))
    ratio = _ratio(http["logins_per_s"], ceiling)
    return _verdict("logins/s", ">= 0.8x the box's argon2 verifications/s",
                    f"{ratio or 0}x ({http['logins_per_s']:,.0f} against {ceiling:,.0f} on "
                    f"{http['hash_ceiling']['cores']} cores)", (ratio or 0) >= 0.8)


def _history(results: dict) -> dict:
    http = results.get("http") or {}
    bare = http.get("history_baseline") or {}
    if not bare.get("history_per_s"):
        return _verdict("history reads/s on MariaDB", ">= 0.7x bare FastAPI + PyMySQL", None, None,
                        bare.get("skipped", "the http scenario not in this run"))
    ratio = _ratio(http["history_per_s"], bare["history_per_s"])
    return _verdict("history reads/s on MariaDB", ">= 0.7x bare FastAPI + PyMySQL",
                    f"{ratio or 0}x ({http['history_per_s']:,.0f} against {bare['history_per_s']:,.0f})",
                    (ratio or 0) >= 0.7)


JUDGES: tuple[Callable[[dict], dict], ...] = (_one2one, _fanout, _memory, _storm, _ack_p99, _logins, _history)


def verdicts(results: dict) -> list[dict]:
    return [judge(results) for judge in JUDGES]
