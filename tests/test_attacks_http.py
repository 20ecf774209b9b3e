"""Hostile HTTP clients: password guessing, login floods and idle connections, from outside only.

Each test uses client addresses of its own (127.0.0.x, all on loopback) so that what it uses up
(failed-login counts, connection slots) is never the rest of the suite's 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import httpx
from support import PASSWORD, PUBLIC_CLIENT, Api, unique


def from_address(base_url: str, address: str, connections: int = 100) -> httpx.AsyncClient:
    """An HTTP client whose connections leave from `address` (the gateway sees it, through HAProxy)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=base_url, timeout=30,
                             transport=httpx.AsyncHTTPTransport(local_address=address, limits=limits))


async def password_grant(http: httpx.AsyncClient, username: str, password: str,
                         headers: dict[str, str] | None = None) -> httpx.Response:
    return await http.post("/oauth2/token", headers=headers, data={
        "grant_type": "password", "username": username, "password": password, "client_id": PUBLIC_CLIENT})


async def early_in_a_window(window_s: int, needed_s: float = 30) -> None:
    """Failures are counted in fixed windows of the wall clock: start where `needed_s` fit before the next."""
    left = window_s - time.time() % window_s
    if left < needed_s:
        await asyncio.sleep(left + 0.5)


def throttled(response: httpx.Response) -> bool:
    """429 in the token endpoint's RFC 6749 error shape, saying when to try again."""
    return (response.status_code == 429 and response.json().get("error") == "slow_down"
            and int(response.headers.get("retry-after", "0")) >= 1)


async def test_forty_wrong_passwords_for_one_account_from_forty_addresses_are_throttled(stack):
    api = Api(stack.base_url)
    user = await api.register()
    limit = stack.settings.login_failures_per_account
    await early_in_a_window(stack.settings.login_failure_window_s)
    answers = [await password_grant(api.http, user["username"], "wrong password",
                                     headers={"X-Forwarded-For": f"127.0.0.{100 + i}"}) for i in range(40)]
    codes = [r.status_code for r in answers]
    assert codes[:limit] == [400] * limit, codes
    assert all(throttled(r) for r in answers[limit:]), codes
    # The right password waits too: a 200 now would tell a guesser it had found it.
    right = await password_grant(api.http, user["username"], PASSWORD, headers={"X-Forwarded-For": "127.0.0.99"})
    assert throttled(right), right.text
    assert int(right.headers["retry-after"]) <= stack.settings.login_failure_window_s
    await api.close()


async def test_failed_logins_from_one_address_are_throttled_whatever_the_accounts(stack):
    limit = stack.settings.login_failures_per_address
    async with from_address(stack.base_url, "127.0.0.21") as guesser, \
            from_address(stack.base_url, "127.0.0.22") as neighbour:
        api = Api(stack.base_url)
        user = await api.register()
        await api.close()
        await early_in_a_window(stack.settings.login_failure_window_s)
        codes = [(await password_grant(guesser, unique("nobody"), "wrong password")).status_code
                 for _ in range(limit)]
        assert codes == [400] * limit, codes
        assert throttled(await password_grant(guesser, unique("nobody"), "wrong password"))
        assert throttled(await password_grant(guesser, user["username"], PASSWORD))
        assert (await password_grant(neighbour, user["username"], PASSWORD)).status_code == 200


FLOOD = 160

Call = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def flood(stack, crowd_address: str, probe_address: str,
                call: Call) -> tuple[list[tuple[int, float, httpx.Response]], httpx.Response, float]:
    """FLOOD calls at once from one address; meanwhile /healthz from another. Returns each call's
    (status, seconds, response), the health answer and how long it took."""
    async def timed(http: httpx.AsyncClient) -> tuple[int, float, httpx.Response]:
        start = time.monotonic()
        r = await call(http)
        return r.status_code, time.monotonic() - start, r

    async with from_address(stack.base_url, crowd_address, FLOOD) as crowd, \
            from_address(stack.base_url, probe_address) as probe:
        calls = [asyncio.create_task(timed(crowd)) for _ in range(FLOOD)]
        await asyncio.sleep(0.5)  # the flood is in
        start = time.monotonic()
        health = await probe.get("/healthz", timeout=5)
        health_s = time.monotonic() - start
        results = await asyncio.wait_for(asyncio.gather(*calls), 120)
    return results, health, health_s


def refusals(results: list[tuple[int, float, httpx.Response]], ok: int) -> list[tuple[float, httpx.Response]]:
    """The 503s among `results`, after checking every answer is `ok` or 503 and some are `ok`."""
    codes = sorted({code for code, _, _ in results})
    assert set(codes) <= {ok, 503}, codes
    assert any(code == ok for code, _, _ in results)  # the queue still serves
    return [(seconds, r) for code, seconds, r in results if code == 503]


async def test_a_flood_of_logins_gets_quick_refusals_and_the_service_keeps_answering(stack):
    api = Api(stack.base_url)
    user = await api.register()
    await api.close()
    results, health, health_s = await flood(stack, "127.0.0.31", "127.0.0.32",
                                            lambda http: password_grant(http, user["username"], PASSWORD))
    refused = refusals(results, 200)
    assert refused, "no login was refused"
    assert all(r.json()["error"] == "temporarily_unavailable" and int(r.headers["retry-after"]) >= 1
               for _, r in refused), refused[0][1].text
    assert min(seconds for seconds, _ in refused) < 5, "refusals must come at once, not after a wait in line"
    assert health.status_code == 200 and health_s < 3, health_s


async def test_a_flood_of_registrations_gets_quick_refusals_and_the_service_keeps_answering(stack):
    # Each sign-up hashes a password: unbounded, 160 at once queued behind each other on the replicas.
    results, health, health_s = await flood(
        stack, "127.0.0.33", "127.0.0.34",
        lambda http: http.post("/api/users", json={"username": unique(), "password": PASSWORD}))
    refused = refusals(results, 201)
    assert refused, "no registration was refused"
    assert all("too many registrations" in r.json()["detail"] for _, r in refused), refused[0][1].text
    assert min(seconds for seconds, _ in refused) < 5, "refusals must come at once, not after a wait in line"
    assert health.status_code == 200 and health_s < 3, health_s


async def open_idle(host: str, port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection that will never send anything; None if the server reset it while it was made."""
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, local_addr=(source, 0)), 5)
    except ConnectionResetError:
        return None


async def closed_by_server(reader: asyncio.StreamReader | None, within_s: float) -> bool:
    """True once the server closes the connection (or answers it, e.g. 408) within `within_s`."""
    if reader is None:
        return True
    try:
        await asyncio.wait_for(reader.read(1), within_s)
        return True  # data (an error answer) or EOF: either way the server let go of it
    except TimeoutError:  # before OSError, of which it is a subclass
        return False
    except OSError:  # reset
        return True


async def test_idle_connections_cannot_lock_others_out_and_are_closed_after_the_request_timeout(stack):
    url = urlsplit(stack.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    cap = stack.settings.http_connections_per_address
    extra = 20
    idle = []
    try:
        for _ in range(cap + extra):
            idle.append(await open_idle(host, port, "127.0.0.41"))
        readers = [connection[0] if connection else None for connection in idle]
        closed = await asyncio.gather(*(closed_by_server(reader, 2) for reader in readers))
        assert sum(closed) >= extra, f"{sum(closed)} of {len(idle)} idle connections from one address refused"
        assert sum(closed) <= extra + 5, "connections under the cap must stay open until the request timeout"
        async with from_address(stack.base_url, "127.0.0.42") as other:
            start = time.monotonic()
            health = await other.get("/healthz", timeout=8)
            assert health.status_code == 200 and time.monotonic() - start < 2
        # The ones let in never send a request: the request timeout closes them.
        left = [reader for reader, gone in zip(readers, closed, strict=True) if not gone]
        deadline = stack.settings.http_request_timeout_s + 5
        closed_later = await asyncio.gather(*(closed_by_server(reader, deadline) for reader in left))
        assert all(closed_later), f"{closed_later.count(False)} idle connections still open after {deadline} s"
    finally:
        for connection in idle:
            if connection:
                connection[1].close()


CROWD = 4200  # more than HAProxy's maxconn as Serve sets it (4096)
CROWD_ADDRESSES = 200  # 127.0.1.1 ... 127.0.1.200: 21 connections each


async def test_idle_connections_from_many_addresses_each_under_the_cap_cannot_lock_others_out(stack):
    url = urlsplit(stack.base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    each = -(-CROWD // CROWD_ADDRESSES)
    assert each < stack.settings.http_connections_per_address  # no address is refused for its own count
    sources = [f"127.0.1.{i}" for i in range(1, CROWD_ADDRESSES + 1)]
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []
    try:
        for _ in range(each):  # one connection per address at a time, all addresses at once
            idle += await asyncio.gather(*(open_idle(host, port, source) for source in sources))
        readers = [connection[0] if connection else None for connection in idle]
        async with from_address(stack.base_url, "127.0.2.1") as other:
            start = time.monotonic()
            try:
                health: httpx.Response | str = await other.get(
                    "/healthz", timeout=stack.settings.http_request_timeout_s + 5)
            except httpx.TimeoutException as exc:
                health = repr(exc)
            health_s = time.monotonic() - start
        crowd = f"{len(idle)} idle connections from {len(sources)} addresses"
        assert isinstance(health, httpx.Response) and health.status_code == 200 and health_s < 2, \
            f"/healthz behind {crowd}: {health} after {health_s:.1f} s"
        # All were let in (none over its address's cap) and the request timeout frees every slot again.
        closed = await asyncio.gather(*(closed_by_server(reader, 0.01) for reader in readers))
        assert not any(closed), f"{sum(closed)} of {len(idle)} idle connections refused"
        deadline = stack.settings.http_request_timeout_s + 5
        closed_later = await asyncio.gather(*(closed_by_server(reader, deadline) for reader in readers))
        assert all(closed_later), f"{closed_later.count(False)} idle connections still open after {deadline} s"
    finally:
        for connection in idle:
            if connection:
                connection[1].close()
