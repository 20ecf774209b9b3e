from __future__ import annotations

from client import Api, Socket
from conftest import run


def test_login_and_socket(stack):
    async def scenario():
        api = Api(stack.base_url)
        login = await api.user()
        sock = await Socket.open(login.socket_url, login.access_token)
        assert sock.auth["type"] == "auth_ok", sock.auth
        pong = await sock.request({"type": "ping"}, "pong")
        assert pong == {"type": "pong"}
        await sock.close()
        await api.close()

    run(scenario())
