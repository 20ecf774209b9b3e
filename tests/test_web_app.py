"""The web chat app at /app in a real browser: Debian's headless Chromium driven by Playwright, people
signing up and chatting in separate browser contexts as they would in separate browsers.

Screenshots of the key steps go to test-artifacts/web/ (kept by CI as artifacts)."""

from __future__ import annotations

import asyncio
import os
import struct
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from faults import kill_socket_node
from playwright.async_api import Browser, Page, async_playwright

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
PASSWORD = "correct horse battery"
WAIT_MS = 20_000
PHONE = {"width": 390, "height": 740}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the module; each person gets their own context (cookies, sessionStorage)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nweb app screenshots: {ARTIFACTS}")
    async with async_playwright() as playwright:
        args = ["--disable-dev-shm-usage", "--disable-gpu"] + (["--no-sandbox"] if os.geteuid() == 0 else [])
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def new_page(browser: Browser, stack, viewport: dict | None = None) -> Page:
    context = await browser.new_context(viewport=viewport or {"width": 1100, "height": 720})
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.base_url}/app")
    return page


async def sign_up(browser: Browser, stack, prefix: str, nickname: str = "") -> tuple[Page, str]:
    """A new person in their own browser context, signed up through the form and connected."""
    page = await new_page(browser, stack)
    name = unique(prefix)
    await page.get_by_label("Username").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_label("Display name (sign up only, optional)").fill(nickname)
    await page.get_by_role("button", name="Sign up").click()
    await page.locator('#conn[data-state="connected"]').wait_for()
    return page, name


async def start_direct(page: Page, other: str) -> None:
    await page.get_by_label("Chat with (username)").fill(other)
    await page.get_by_label("Chat with (username)").press("Enter")
    await page.locator("#chat[data-conv^='d:']").wait_for()


async def open_conversation(page: Page, title: str) -> None:
    await page.locator("button.conv", has_text=title).click()
    await page.locator("#composer").wait_for()


async def say(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


async def shown(page: Page) -> list[str]:
    """The texts of the messages on screen, in order (acknowledged ones: placeholders left out)."""
    return await page.locator("#messages li.msg[data-seq] .text").all_inner_texts()


async def until_shown(page: Page, expected: list[str]) -> list[str]:
    """Wait until the screen shows exactly `expected`, no placeholder left; fail with what it showed."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        texts = await shown(page)
        if texts == expected and await page.locator("#messages li.pending").count() == 0:
            return texts
        if time.monotonic() > deadline:
            raise AssertionError(f"the screen shows {texts}, not {expected}")
        await asyncio.sleep(0.2)


def png(width: int = 24, height: int = 16) -> bytes:
    """A small valid PNG (a red and blue stripe), made without an imaging library."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + (b"\xff\x00\x00" * (width // 2) + b"\x00\x00\xff" * (width - width // 2))
                    for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


async def test_the_app_is_served_at_app_with_strict_security_headers(stack):
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        for path in ("/app", "/app/"):
            page = await http.get(path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["x-content-type-options"] == "nosniff"
        assert (await http.get("/app/main.js")).headers["content-type"].startswith("text/javascript")
        assert (await http.get("/app/../pyproject.toml")).status_code == 404
        assert (await http.get("/app/nothing-here.js")).status_code == 404
        assert "/app" not in str((await http.get("/openapi.json")).json()["paths"])


async def test_two_people_chat_both_ways_and_a_reload_shows_the_whole_conversation(browser, stack):
    ann, ann_name = await sign_up(browser, stack, "ann")
    bob, bob_name = await sign_up(browser, stack, "bob")
    await start_direct(ann, bob_name)
    await say(ann, "hello bob")
    await until_shown(ann, ["hello bob"])

    # Bob's list shows the new conversation with its unread count and last message.
    item = bob.locator("button.conv", has_text=ann_name)
    await item.locator(".unread", has_text="1").wait_for()
    assert await item.locator(".conv-last").inner_text() == "hello bob"
    await shot(bob, "01-unread-in-the-list")
    await open_conversation(bob, ann_name)
    await until_shown(bob, ["hello bob"])
    await ann.locator(".seen", has_text="Seen").wait_for()  # Bob's read receipt

    await bob.get_by_label("Message", exact=True).press_sequentially("typing")
    await ann.locator("#typing", has_text="is typing").wait_for()
    await bob.get_by_label("Message", exact=True).fill("")
    conversation = ["hello bob"]
    for n in range(3):
        for page, name in ((bob, "bob"), (ann, "ann")):
            await say(page, f"{name} {n}")
            conversation.append(f"{name} {n}")
            await until_shown(page, conversation)
    await until_shown(bob, conversation)
    await until_shown(ann, conversation)
    await shot(ann, "02-direct-chat")

    await bob.reload()  # the login stays in sessionStorage; the messages come from history
    await bob.locator('#conn[data-state="connected"]').wait_for()
    await open_conversation(bob, ann_name)
    await until_shown(bob, conversation)
    await shot(bob, "03-after-reload")

    # A kept login that no longer works (tokens garbled) brings back the sign-in page, not a broken app.
    await bob.goto(f"{stack.base_url}/app/style.css")  # this origin, without the app (which saves on leaving)
    await bob.evaluate("""() => {
        const kept = JSON.parse(sessionStorage.getItem('imray.login'));
        kept.tokens.access_token = 'garbage'; kept.tokens.refresh_token = 'garbage';
        sessionStorage.setItem('imray.login', JSON.stringify(kept));
    }""")
    await bob.goto(f"{stack.base_url}/app")
    await bob.get_by_role("button", name="Log in").wait_for()
    # Logging out ends the login: the tab forgets it, and a reload asks to sign in.
    await ann.get_by_role("button", name="Log out").click()
    await ann.get_by_role("button", name="Log in").wait_for()
    assert await ann.evaluate("() => sessionStorage.getItem('imray.login')") is None
    for page in (ann, bob):
        await page.context.close()


async def test_a_group_of_three_sees_the_messages_in_the_same_order(browser, stack):
    people = [await sign_up(browser, stack, prefix, prefix.title()) for prefix in ("cat", "dan", "eve")]
    (cat, _), (dan, dan_name), (_, eve_name) = people
    await cat.get_by_text("New group").click()
    await cat.get_by_label("Group name").fill("Trio")
    await cat.get_by_label("Members (usernames, comma separated)").fill(f"{dan_name}, {eve_name}")
    await cat.get_by_role("button", name="Create group").click()
    await cat.locator("#chat[data-conv^='g:']").wait_for()
    await cat.locator("li.system", has_text="created the group").wait_for()
    for page, _ in people[1:]:
        await open_conversation(page, "Trio")
    # Everyone sends at once; the server's seq decides one order that every screen shows.
    await asyncio.gather(*(say(page, f"{name[:3].title()} says hi") for page, name in people))
    await asyncio.gather(*(say(page, f"{name[:3].title()} again") for page, name in people))
    orders = []
    for page, _ in people:
        deadline = time.monotonic() + WAIT_MS / 1000
        while len(texts := await shown(page)) < 6 or await page.locator("#messages li.pending").count():
            assert time.monotonic() < deadline, f"a member's screen shows only {texts}"
            await asyncio.sleep(0.2)
        orders.append(texts)
    assert sorted(orders[0]) == sorted(f"{p} {w}" for p in ("Cat", "Dan", "Eve") for w in ("says hi", "again"))
    assert orders[0] == orders[1] == orders[2]
    await shot(dan, "04-group-of-three")
    for page, _ in people:
        await page.context.close()


async def test_an_image_sent_by_one_person_shows_on_the_other_side(browser, stack):
    fay, fay_name = await sign_up(browser, stack, "fay")
    gus, gus_name = await sign_up(browser, stack, "gus")
    await start_direct(fay, gus_name)
    await fay.locator("#attach").set_input_files(files=[{"name": "stripes.png", "mimeType": "image/png",
                                                          "buffer": png()}])
    await open_conversation(gus, fay_name)
    picture = gus.locator("#messages img.picture")
    await picture.wait_for()
    await gus.wait_for_function("() => document.querySelector('#messages img.picture')?.naturalWidth === 24",
                                timeout=WAIT_MS)
    assert (await picture.get_attribute("src") or "").startswith("blob:")
    await shot(gus, "05-image-received")
    for page in (fay, gus):
        await page.context.close()


async def test_a_phone_sized_screen_opens_a_conversation_and_sends_by_keyboard_only(browser, stack):
    hal, _ = await sign_up(browser, stack, "hal")
    ivy_name = unique("ivy")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        (await http.post("/api/users", json={"username": ivy_name, "password": PASSWORD})).raise_for_status()
    await start_direct(hal, ivy_name)
    await say(hal, "ivy, are you there?")
    await until_shown(hal, ["ivy, are you there?"])

    ivy = await new_page(browser, stack, PHONE)
    await ivy.keyboard.type(ivy_name)  # the username field has the focus
    await ivy.keyboard.press("Tab")
    await ivy.keyboard.type(PASSWORD)
    await ivy.keyboard.press("Enter")  # the form's first button: Log in
    await ivy.locator('#conn[data-state="connected"]').wait_for()
    for _ in range(20):  # Tab along the page until the conversation has the focus
        await ivy.keyboard.press("Tab")
        if await ivy.evaluate("() => document.activeElement?.dataset?.conv ?? ''"):
            break
    else:
        raise AssertionError("Tab never reached the conversation")
    await ivy.keyboard.press("Enter")
    await until_shown(ivy, ["ivy, are you there?"])
    assert not await ivy.locator("nav.sidebar").is_visible()  # one pane at a time on a phone
    await ivy.keyboard.type("yes, on my phone")  # the message box has the focus once the chat opens
    await ivy.keyboard.press("Enter")
    await until_shown(hal, ["ivy, are you there?", "yes, on my phone"])
    await until_shown(ivy, ["ivy, are you there?", "yes, on my phone"])
    await shot(ivy, "06-phone")
    for page in (hal, ivy):
        await page.context.close()


@pytest.mark.runs_last
async def test_a_socket_node_killed_during_the_chat_loses_nothing_and_shows_nothing_twice(browser, stack):
    jo, jo_name = await sign_up(browser, stack, "jo")
    kim, kim_name = await sign_up(browser, stack, "kim")
    await start_direct(jo, kim_name)
    await say(jo, "before 1")
    await open_conversation(kim, jo_name)
    await say(kim, "before 2")
    conversation = ["before 1", "before 2"]
    await until_shown(jo, conversation)

    node = await jo.evaluate("() => JSON.parse(sessionStorage.getItem('imray.login')).tokens.socket_node")
    reconnecting = asyncio.create_task(jo.locator('#conn[data-state="reconnecting"]').wait_for(state="attached"))
    killed = asyncio.create_task(kill_socket_node(stack, node))
    await reconnecting  # shown while the node is away
    await shot(jo, "07-reconnecting")
    for n in range(3):  # sent while Jo's node is down or coming back: held, then sent with the same ids
        await say(jo, f"during {n}")
        await say(kim, f"kim during {n}")
    await killed
    await jo.locator('#conn[data-state="connected"]').wait_for()
    await say(jo, "after")
    for page in (jo, kim):
        deadline = time.monotonic() + 40
        while (len(texts := await shown(page)) < 9 or await page.locator("#messages li.pending").count()):
            assert time.monotonic() < deadline, f"the screen shows {texts}"
            await asyncio.sleep(0.3)
        assert sorted(texts) == sorted([*conversation, *(f"during {n}" for n in range(3)),
                                        *(f"kim during {n}" for n in range(3)), "after"])
        assert texts.index("during 0") < texts.index("during 1") < texts.index("during 2") < texts.index("after")
    assert await shown(jo) == await shown(kim)  # one order, each message once, on both screens
    seqs = await jo.locator("#messages li[data-seq]").evaluate_all("items => items.map(i => Number(i.dataset.seq))")
    assert seqs == list(range(1, len(seqs) + 1))  # no gap
    await shot(jo, "08-after-node-loss")
    for page in (jo, kim):
        await page.context.close()
