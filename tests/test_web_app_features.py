"""The web app's chat features beyond sending, in a real browser (the same Chromium set-up as
test_web_app.py): message actions (reply, react, edit, recall, delete for me) and mentions, group
administration, contacts with presence. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

import asyncio
import re

import pytest
from playwright.async_api import Browser, Page, Route
from test_web_app import browser, open_conversation, png, say, shot, sign_up, start_direct, until_shown

pytestmark = pytest.mark.asyncio(loop_scope="module")
__all__ = ["browser"]  # the module's Chromium fixture, shared with test_web_app.py


def message(page: Page, text: str):
    """The message bubble whose own text is `text` (not one quoting it)."""
    return page.locator("#messages li.msg[data-seq]").filter(has=page.locator(".body .text", has_text=text))


async def menu_action(page: Page, text: str, action: str) -> None:
    """Open a message's menu from the keyboard and choose `action` (its accessible name)."""
    await message(page, text).get_by_role("button", name="Message actions").focus()
    await page.keyboard.press("Enter")
    item = message(page, text).get_by_role("menuitem", name=action, exact=True)
    await item.wait_for()
    await item.focus()
    await page.keyboard.press("Enter")


async def test_a_reply_a_reaction_an_edit_and_a_recall_show_on_the_other_side(browser: Browser, stack):
    ann, ann_name = await sign_up(browser, stack, "ann", "Ann")
    bob, _ = await sign_up(browser, stack, "bob", "Bob")
    await start_direct(bob, ann_name)
    await say(bob, "lunch at noon?")
    await open_conversation(ann, "Bob")
    await until_shown(ann, ["lunch at noon?"])

    # Ann answers Bob's message: her reply quotes it on both screens.
    await message(ann, "lunch at noon?").get_by_role("button", name="Message actions").focus()
    await ann.keyboard.press("Enter")
    # The menu opens with focus on its first item (rendered on the next frame: wait for it).
    await ann.wait_for_function("() => document.activeElement?.getAttribute('role') === 'menuitem'", timeout=10_000)
    await ann.keyboard.press("Enter")  # the first item: Reply
    await ann.locator("#compose-what", has_text="Replying to Bob").wait_for()
    await say(ann, "yes, see you there")
    await until_shown(bob, ["lunch at noon?", "yes, see you there"])
    await message(bob, "yes, see you there").locator("blockquote.quote", has_text="lunch at noon?").wait_for()

    # Ann reacts to Bob's message; Bob sees the count, and adds his own.
    await menu_action(ann, "lunch at noon?", "React 👍")
    await message(bob, "lunch at noon?").get_by_role("button", name="👍 1").wait_for()
    await message(bob, "lunch at noon?").get_by_role("button", name="👍 1").click()
    await message(ann, "lunch at noon?").get_by_role("button", name="👍 2").wait_for()

    # Ann edits her reply, then sends and recalls a message: Bob sees the new text, then "message recalled".
    await menu_action(ann, "yes, see you there", "Edit")
    box = ann.get_by_label("Message", exact=True)
    await box.fill("yes, see you at 12")
    await box.press("Enter")
    await message(bob, "yes, see you at 12").locator(".meta", has_text="edited").wait_for()
    await say(ann, "wrong chat, sorry")
    await until_shown(bob, ["lunch at noon?", "yes, see you at 12", "wrong chat, sorry"])
    await menu_action(ann, "wrong chat, sorry", "Recall")
    await bob.locator("#messages li.msg .body.gone", has_text="message recalled").wait_for()
    await until_shown(bob, ["lunch at noon?", "yes, see you at 12"])
    await shot(bob, "10-reply-reaction-recall")

    # Bob deletes Ann's reply for himself only.
    await menu_action(bob, "yes, see you at 12", "Delete for me")
    await bob.locator("#messages li.msg .body.gone", has_text="You deleted this message").wait_for()
    await until_shown(ann, ["lunch at noon?", "yes, see you at 12"])
    for page in (ann, bob):
        await page.context.close()


async def answer_late(route: Route) -> None:
    await asyncio.sleep(1.5)
    await route.continue_()


async def test_a_mention_highlights_and_the_owner_renames_removes_mutes_hands_over_and_the_group_is_dissolved(
        browser: Browser, stack):
    (olga, _), (pam, pam_name), (quinn, quinn_name) = [
        await sign_up(browser, stack, prefix, prefix.title()) for prefix in ("olga", "pam", "quinn")]
    # The group and its members' profiles reach Olga's app late, as from a loaded server: what she
    # types before they arrive must still be offered once they do.
    late = re.compile(r".*/api/(users|groups)/\d+$")
    await olga.route(late, answer_late)
    await olga.get_by_text("New group").click()
    await olga.get_by_label("Group name").fill("Book club")
    await olga.get_by_label("Members (usernames, comma separated)").fill(f"{pam_name}, {quinn_name}")
    await olga.get_by_role("button", name="Create group").click()
    await olga.locator("#chat[data-conv^='g:']").wait_for()
    await open_conversation(quinn, "Book club")

    # Olga types @ and the start of Pam's name: the app offers Pam; Enter takes her, and the message names her.
    box = olga.get_by_label("Message", exact=True)
    await box.press_sequentially(f"@{pam_name[:5]}")
    await olga.get_by_role("option", name=f"@{pam_name}").wait_for()
    await olga.unroute(late)
    await box.press("Enter")
    assert await box.input_value() == f"@{pam_name} "
    await box.press_sequentially("are you in?")
    await box.press("Enter")
    # Pam has not opened the group: her list marks it with "@" until she reads it.
    badge = pam.locator("button.conv", has_text="Book club").get_by_role("img", name="mentions you")
    await badge.wait_for()
    await shot(pam, "15-mention-in-the-list")
    await open_conversation(pam, "Book club")
    await pam.locator("#messages li.msg.mentioned", has_text="are you in?").wait_for()
    await badge.wait_for(state="detached")
    await quinn.locator("#messages li.msg", has_text="are you in?").wait_for()
    assert await quinn.locator("#messages li.msg.mentioned").count() == 0

    # A plain member's panel lists the roles and offers no administration.
    await pam.get_by_role("button", name="Group info").click()
    await pam.locator("#info-members li", has_text="owner").wait_for()
    assert await pam.locator("#group-panel").get_by_role("button", name="Remove").count() == 0
    assert await pam.locator("#info-rename").count() == 0

    # The owner renames the group and removes Quinn.
    await olga.get_by_role("button", name="Group info").click()
    await olga.locator("#info-rename").fill("Readers")
    await olga.locator("#group-panel").get_by_role("button", name="Save").click()
    await pam.locator("#chat-title", has_text="Readers").wait_for()
    await pam.locator("#info-name", has_text="Readers").wait_for()

    # The owner lets only the owner and admins add people: Pam's panel says so and stops offering to add.
    await pam.locator("#info-add-policy", has_text="Any member can add people").wait_for()
    assert await pam.locator("#info-add").count() == 1
    await olga.get_by_label("Who can add people").select_option("admins")
    await pam.locator("#info-add-policy", has_text="Only the owner and admins can add people").wait_for()
    await pam.locator("#info-add").wait_for(state="detached")
    await olga.locator("#info-members li", has_text="Quinn").get_by_role("button", name="Remove").click()
    await quinn.locator("#messages li.system", has_text="removed you").wait_for()
    await quinn.locator("#chat-note", has_text="no longer a member").wait_for()
    assert await quinn.locator("#composer").is_hidden()
    await olga.locator("#info-members li", has_text="Quinn").wait_for(state="detached")
    await shot(olga, "11-group-info")
    await shot(quinn, "12-removed-from-group")

    # Olga mutes Pam, then hands her the group (an owner is never muted); Pam, now owner, dissolves it.
    for page in (olga, pam):
        page.on("dialog", lambda dialog: dialog.accept())
    pam_row = olga.locator("#info-members li", has_text="Pam")
    await pam_row.get_by_role("button", name="Mute").click()
    await pam.locator("#chat-note", has_text="You are muted").wait_for()
    await pam_row.get_by_role("button", name="Make owner").click()
    await pam.locator("#chat-note").wait_for(state="hidden")
    await pam.get_by_role("button", name="Dissolve group").click()
    await olga.locator("#chat-note", has_text="This group was dissolved").wait_for()
    assert await olga.locator("#composer").is_hidden()
    for page in (olga, pam, quinn):
        await page.context.close()


async def test_a_contact_request_accepted_shows_online_removal_and_a_new_request_work_then_offline_and_blocks(
        browser: Browser, stack):
    rae, _ = await sign_up(browser, stack, "rae", "Rae")
    sam, sam_name = await sign_up(browser, stack, "sam", "Sam")
    await rae.get_by_label("Add a contact (username)").fill(sam_name)
    await rae.get_by_role("button", name="Ask", exact=True).click()
    await rae.locator("#requests-sent li", has_text="Sam").wait_for()
    request = sam.locator("#requests-received li", has_text="Rae")  # arrives live (a contact frame)
    await request.get_by_role("button", name="Accept").click()
    await request.wait_for(state="detached")
    await sam.locator("#contact-list li", has_text="Rae").wait_for()

    contact = rae.locator("#contact-list li", has_text="Sam")
    await contact.locator('.dot[data-online="true"]').wait_for()
    assert await rae.locator("#requests-sent").count() == 0

    # Rae removes Sam (after confirming): each drops from the other's list; a new request makes them contacts again.
    rae.on("dialog", lambda dialog: dialog.accept())
    await contact.get_by_role("button", name="Remove").click()
    await contact.wait_for(state="detached")
    await sam.locator("#contact-list li", has_text="Rae").wait_for(state="detached")
    await rae.get_by_label("Add a contact (username)").fill(sam_name)
    await rae.get_by_role("button", name="Ask", exact=True).click()
    await request.get_by_role("button", name="Accept").click()
    await contact.locator('.dot[data-online="true"]').wait_for()
    await shot(rae, "13-contact-online")
    await sam.context.close()  # Sam's last session ends: Rae's dot goes grey (a presence frame)
    await contact.locator('.dot[data-online="false"]').wait_for()

    await contact.get_by_role("button", name="Block").click()
    await rae.locator("#blocked-list li", has_text="Sam").get_by_role("button", name="Unblock").click()
    await rae.locator("#blocked-list").wait_for(state="detached")
    assert await rae.locator("#contact-list li", has_text="Sam").count() == 0  # a block ends the contact
    await rae.context.close()


async def test_a_new_nickname_and_avatar_show_on_my_screen_and_on_the_other_side(
        browser: Browser, stack):
    tia, tia_name = await sign_up(browser, stack, "tia")
    await tia.get_by_text("Profile", exact=True).click()
    await tia.get_by_label("Avatar (PNG, JPEG, GIF or WebP)").set_input_files(
        files=[{"name": "me.png", "mimeType": "image/png", "buffer": png()}])
    await tia.wait_for_function(
        "() => document.querySelector('#profile-avatar img')?.naturalWidth === 24", timeout=20_000)
    await tia.get_by_label("Display name").fill("Tia Maria")
    await tia.get_by_role("button", name="Save name").click()
    await tia.locator("#whoami", has_text="Tia Maria").wait_for()
    assert await tia.locator("#whoami .avatar img").count() == 1
    await shot(tia, "14-profile")

    uma, _ = await sign_up(browser, stack, "uma")
    await start_direct(uma, tia_name)
    await uma.locator("#chat-title", has_text="Tia Maria").wait_for()
    await uma.locator("button.conv", has_text="Tia Maria").wait_for()
    # Tia's picture in Uma's list, read through the gateway (on the real stack the avatar URL redirects
    # to an object store on another origin, which the page's fetch could not follow).
    await uma.wait_for_function(
        "() => [...document.querySelectorAll('button.conv .avatar img')].some(i => i.naturalWidth === 24)",
        timeout=20_000)
    for page in (tia, uma):
        await page.context.close()
