"""Issue 15, "one person, many networks", in the web UI: headless Chromium, real servers.

The module's world (``conftest.py``) has chatter (bob is alice's buddy there) and arena-chat;
bob gets an account on arena-chat too (alice's buddy). alice signs in, links chatter through
the prompt, and bob's two accounts are merged through the agent (``POST
/agent/v1/people/merge``, from the page). The buddy list then shows one row for Bob with the
best presence of his accounts and each account's own presence and activity; a message from
Bob's chat goes to the network he was last active on (checked on bob's side of each server),
or to the one chosen under "Send on"; the chat shows the merged history. The row follows
presence changes live.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from web_kit import PW, Peer, UIProcess, World, run_async, shot

from interapp.secret import Secret

pytestmark = pytest.mark.slow

FRAMES: list[str] = []  # the agent's events the page received over its WebSocket
BOB_ARENA_CHAT_PW = "bob-ac-" + secrets.token_urlsafe(12)


async def _seed_bob_on_arena_chat(w: World) -> tuple[str, Secret]:
    from interapp.server import accounts, passwords, social
    from interapp.server.storage import Database

    db = Database.open(f"sqlite:///{w.tmp / 'arena-chat'}.db")
    try:
        async with db.begin() as conn:
            alice = await accounts.require_user(conn, "alice")
            bob = await accounts.create_user(
                conn, "bob", display_name="Bob",
                password_hash=await asyncio.to_thread(passwords.hash_sync,
                                                      Secret(BOB_ARENA_CHAT_PW)))
            await social.make_buddies(conn, alice, bob)
            cid, secret = await accounts.create_client(conn, "peers", public=False)
            assert secret is not None
            return cid, secret
    finally:
        await db.close()


@pytest.fixture(scope="module")
def bob2(world: World) -> Iterator[Peer]:
    """bob on arena-chat (a second account of the same human), talking to it over HTTP."""
    cid, secret = run_async(lambda: _seed_bob_on_arena_chat(world))
    url = world.servers["arena-chat"].url
    token = httpx.post(f"{url}/oauth/token", data={
        "grant_type": "password", "username": "bob", "password": BOB_ARENA_CHAT_PW},
        auth=(cid, secret.reveal()), timeout=10)
    assert token.status_code == 200, token.text
    http = httpx.Client(base_url=url, timeout=10, headers={
        "Authorization": f"Bearer {token.json()['access_token']}"})
    yield Peer("bob", http)
    http.close()


@pytest.fixture(scope="module")
def page(browser: Any, ui: UIProcess) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("websocket", lambda ws: ws.on("framereceived", lambda f: FRAMES.append(str(f))))
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def agent_call(page: Page, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call to the agent from the page, as app.js makes it (session cookie + CSRF)."""
    answer: dict[str, Any] = page.evaluate(
        """async ([method, path, body]) => {
          const csrf = document.querySelector('meta[name="csrf-token"]').content;
          const res = await fetch("/agent/v1" + path, { method, credentials: "same-origin",
            headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
            body: body === null ? undefined : JSON.stringify(body) });
          return { status: res.status, data: await res.json() };
        }""", [method, path, body])
    return int(answer["status"]), answer["data"]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sign_in_and_link_both_apps(page: Page, ui: UIProcess, bob2: Peer) -> None:
    page.goto(ui.url)
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PW["alice@arena"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live")).to_have_text("Live")
    page.get_by_role("button", name="Connect chatter").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_label("Username").fill("alice")
    dialog.get_by_label("Password").fill(PW["alice@chatter"])
    dialog.get_by_role("button", name="Sign in").click()
    expect(dialog).to_be_hidden()
    expect(page.locator('.buddy[data-target="chatter"][data-user="bob"]')).to_be_visible()
    expect(page.locator('.buddy[data-target="arena-chat"][data-user="bob"]')).to_be_visible()
    expect(page.locator(".buddy.person")).to_have_count(0)


def test_merged_person_shows_one_row_with_the_best_presence(page: Page, world: World,
                                                            bob2: Peer) -> None:
    world.peer("bob").presence("away", "making tea")
    bob2.presence("online", "in the lobby")
    resp = bob2.http.put("/v1/presence", json={"activity": {"name": "Arena",
                                                            "details": "Ranked 2v2"}})
    assert resp.status_code == 200, resp.text
    expect(page.locator('.buddy[data-target="arena-chat"][data-user="bob"]')
           ).to_have_attribute("data-presence", "online")
    expect(page.locator('.buddy[data-target="chatter"][data-user="bob"]')
           ).to_have_attribute("data-presence", "away")
    status, person = agent_call(page, "POST", "/people/merge",
                                {"accounts": ["chatter:bob", "arena-chat:bob"], "name": "Bob"})
    assert status == 200, person
    # people_changed: the list is fetched again; one row for Bob, his accounts inside it
    row = page.locator(".buddy.person")
    expect(row).to_have_count(1)
    assert any('"people_changed"' in f and person["id"] in f for f in FRAMES), \
        "the people_changed event did not reach the page"
    expect(row).to_have_attribute("data-person", person["id"])
    expect(row.locator(".bname")).to_have_text("Bob")
    expect(row).to_have_attribute("data-presence", "online")  # the best of away and online
    expect(row.locator(".presence")).to_have_text("online")
    expect(row.locator(".status")).to_have_text("in the lobby")
    expect(row.locator(".activity")).to_have_text("Bob — Arena · Ranked 2v2")
    chatter = row.locator('.acct[data-target="chatter"][data-user="bob"]')
    arena_chat = row.locator('.acct[data-target="arena-chat"][data-user="bob"]')
    expect(chatter).to_have_attribute("data-presence", "away")
    expect(chatter).to_contain_text("making tea")
    expect(arena_chat).to_have_attribute("data-presence", "online")
    expect(arena_chat.locator(".aactivity")).to_have_text("— Arena · Ranked 2v2")
    # the accounts are no longer rows of their own; carol (not merged) still is
    expect(page.locator('.buddy:not(.person)[data-user="bob"]')).to_have_count(0)
    expect(page.locator('.buddy[data-target="chatter"][data-user="carol"]')).to_be_visible()
    expect(page.locator('.buddy[data-target="arena-chat"][data-user="dave"]')).to_be_visible()


def test_person_chat_sends_where_they_were_last_active(page: Page, world: World,
                                                       bob2: Peer) -> None:
    bob = world.peer("bob")
    bob2.send("alice", "hello from arena-chat")
    bob.send("alice", "hello from chatter")  # the later: chatter is where he was last active
    row = page.locator(".buddy.person")
    expect(row.locator(":scope > .unread")).to_have_text("2 new")
    row.click()
    expect(page.locator("#chat-h")).to_have_text(
        "Chat with Bob (chatter: @bob, arena-chat: @bob)")
    expect(row).to_have_attribute("aria-current", "true")
    messages = page.locator("#messages .msg")
    expect(messages).to_have_count(2)  # the merged history: both networks, in time order
    expect(messages.nth(0)).to_contain_text("hello from arena-chat")
    expect(messages.nth(0).locator(".meta")).to_contain_text("· arena-chat")
    expect(messages.nth(1)).to_contain_text("hello from chatter")
    expect(messages.nth(1).locator(".meta")).to_contain_text("· chatter")
    expect(page.get_by_label("Send on")).to_have_value("")
    page.get_by_label("Message to Bob").fill("which one is this?")
    page.get_by_label("Message to Bob").press("Enter")
    mine = page.locator("#messages .msg.mine")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("which one is this?")
    expect(mine.locator(".meta")).to_contain_text("· chatter")
    wait_for(lambda: any(m["body"] == "which one is this?" for m in bob.history("alice")),
             "the message at bob on chatter")
    assert not any(m["body"] == "which one is this?" for m in bob2.history("alice"))
    # a named network: arena-chat
    page.get_by_label("Send on").select_option("arena-chat")
    page.get_by_label("Message to Bob").fill("now on arena-chat")
    page.get_by_label("Message to Bob").press("Enter")
    expect(mine).to_have_count(2)
    expect(mine.nth(1).locator(".meta")).to_contain_text("· arena-chat")
    wait_for(lambda: any(m["body"] == "now on arena-chat" for m in bob2.history("alice")),
             "the message at bob on arena-chat")
    assert not any(m["body"] == "now on arena-chat" for m in bob.history("alice"))
    # bob answers live on arena-chat: it shows in the same conversation
    bob2.send("alice", "got it")
    expect(messages).to_have_count(5)
    expect(messages.nth(4)).to_contain_text("got it")
    expect(messages.nth(4).locator(".meta")).to_contain_text("· arena-chat")
    # reopened: the merged history, from the agent, in the same order
    page.reload()
    page.locator(".buddy.person").click()
    expect(messages).to_have_count(5)
    assert [t.strip() for t in messages.locator(".body").all_inner_texts()] == [
        "hello from arena-chat", "hello from chatter", "which one is this?",
        "now on arena-chat", "got it"]
    shot(page, "person-chat")


def test_person_row_and_chat_fit_a_narrow_screen(page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    expect(page.locator("#live")).to_have_text("Live")
    page.locator(".buddy.person").click()
    expect(page.locator("#messages .msg")).to_have_count(5)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide at 390 px"
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_row_follows_presence_live(page: Page, world: World, bob2: Peer) -> None:
    row = page.locator(".buddy.person")
    bob2.presence("offline")
    expect(row).to_have_attribute("data-presence", "away")  # the best now: chatter
    expect(row.locator(".status")).to_have_text("making tea")
    expect(row.locator('.acct[data-target="arena-chat"]')).to_have_attribute(
        "data-presence", "offline")
    world.peer("bob").presence("busy", "on a call")
    expect(row).to_have_attribute("data-presence", "busy")
    expect(row.locator(".status")).to_have_text("on a call")


def test_a_lost_answer_is_resent_and_delivered_once(page: Page, world: World) -> None:
    """The person's chat uses the outbox too: the answer to the first POST is lost, the page
    sends again with the same client_msg_id, and bob gets the message once."""
    lost: list[str] = []

    def lose_answer(route: Any) -> None:
        if not lost:
            route.fetch()  # the agent takes it and sends it to chatter ...
            lost.append(route.request.post_data or "")
            route.abort()  # ... but the page never hears back
        else:
            route.continue_()

    page.route("**/agent/v1/people/*/messages", lose_answer)
    page.get_by_label("Send on").select_option("")
    page.get_by_label("Message to Bob").fill("answer lost once")
    page.get_by_label("Message to Bob").press("Enter")
    expect(page.locator("#messages .msg.pending")).to_have_count(0, timeout=15_000)
    page.unroute("**/agent/v1/people/*/messages")
    assert lost and "client_msg_id" in lost[0]
    bodies = [m["body"] for m in world.peer("bob").history("alice")]
    assert bodies.count("answer lost once") == 1
    expect(page.locator("#messages .msg.mine").last).to_contain_text("answer lost once")


def test_split_brings_the_accounts_back(page: Page) -> None:
    status, answer = agent_call(page, "POST", "/people/split", {"person": "Bob"})
    assert status == 200, answer
    expect(page.locator(".buddy.person")).to_have_count(0)
    expect(page.locator('.buddy[data-target="chatter"][data-user="bob"]')).to_be_visible()
    expect(page.locator('.buddy[data-target="arena-chat"][data-user="bob"]')).to_be_visible()
