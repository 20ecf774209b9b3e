"""The `contacts` direct-message policy (issue 18), turned on live through Nacos as an operator would:
only contacts start a direct conversation, one that has messages goes on, and a contact accepted
or removed reaches the owning shard at once.

Collected only on the real stack (live settings follow Nacos); tests/test_unit_contacts.py covers
the shard's rule without Ray.
"""

from __future__ import annotations

from nacos_console import publish_config
from support import Api, Login, Socket, bearer, direct, eventually, one_per_node


async def befriend(api: Api, a: Login, b: Login) -> None:
    assert (await api.post("/api/contacts/requests", a.access_token, {"user_id": b.user_id})).status_code == 200
    assert (await api.post(f"/api/contacts/requests/{a.user_id}/accept", b.access_token, None)).status_code == 200


async def test_only_contacts_start_a_direct_conversation_under_the_live_contacts_policy(stack) -> None:
    api = Api(stack.base_url)
    a, b = await one_per_node(api)
    sa = await Socket.open(a.socket_url, a.access_token)
    try:
        publish_config("direct_messages: contacts\n")

        async def stranger_refused():  # a new stranger each try: an accepted first DM would open it
            c = await api.user()
            reply = await sa.send_text(direct(a.user_id, c.user_id), "hello stranger")
            return reply["type"] == "error" and reply["code"] == "forbidden" and reply
        refusal = await eventually(stranger_refused, 30, "direct_messages: contacts to apply")
        assert refusal["message"] == "only contacts may start a direct conversation"

        # b is refused until the two are contacts; accepted, the shard knows at once.
        conv = direct(a.user_id, b.user_id)
        assert (await sa.send_text(conv, "hi?"))["code"] == "forbidden"
        await befriend(api, b, a)
        assert (await sa.send_text(conv, "hi, contact"))["type"] == "ack"
        # Removed as a contact: the conversation that has messages goes on.
        assert (await api.http.delete(f"/api/contacts/{b.user_id}", headers=bearer(a.access_token))).status_code == 204
        assert (await sa.send_text(conv, "still talking"))["type"] == "ack"
    finally:
        publish_config(None)

        async def open_again():
            c = await api.user()
            return (await sa.send_text(direct(a.user_id, c.user_id), "hello"))["type"] == "ack"
        await eventually(open_again, 30, "direct_messages back to open")
        await sa.close()
        await api.close()
