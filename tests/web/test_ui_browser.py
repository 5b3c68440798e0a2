"""The web UI end to end in headless Chromium, against real servers and a real ``interapp ui``.

One world per module (see ``conftest.py``): arena (the local app), chatter (its own accounts)
and arena-chat (arena's accounts). The tests run in file order and share one browser page, as a
person would use it: sign in (wrong password first), link chatter through the prompt form (wrong
password first: the reason is shown and nothing is stored), see one buddy list across both
apps, read history and scroll back, exchange messages with bob (who talks to chatter over HTTP),
lose the connection while typing, see bob come online, set a status, unlink. The last test
checks that no secret reached a page, the UI server's output or the data folder.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect
from web_kit import PW, WRONG, UIProcess, World, run_async, shot
from websockets.sync.client import connect as ws_connect

from interapp.vault import Vault

pytestmark = pytest.mark.slow

DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}
SEEN_HTML: list[str] = []
SEEN_WIRE: list[str] = []  # every answer and WebSocket frame of /agent/v1 the page received


def links_in_vault(w: World) -> list[Any]:
    vault = Vault.open(w.home / "vault.db", env=w.env)
    try:
        return vault.list_links()
    finally:
        vault.close()


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def keep_html(page: Page) -> None:
    SEEN_HTML.append(page.content())


@pytest.fixture(scope="module")
def page(browser: Any, ui: UIProcess) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    p = context.new_page()
    p.set_default_timeout(10_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))

    def answer(r: Any) -> None:
        if "/agent/v1/" in r.url or "/fragments/" in r.url:
            SEEN_WIRE.append(" ".join(r.headers.values()))
            with contextlib.suppress(Exception):  # gone with a navigation: headers were kept
                SEEN_WIRE.append(r.text())

    p.on("response", answer)
    p.on("websocket", lambda ws: ws.on("framereceived", lambda f: SEEN_WIRE.append(str(f))))
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_first_url_signs_the_browser_in_and_drops_the_secret(page: Page, ui: UIProcess) -> None:
    page.goto(ui.url)
    assert page.url == f"{ui.base}/"  # the launch secret left the address bar
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    cookies = page.context.cookies()
    assert len(cookies) == 1
    assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
    assert cookies[0]["path"] == "/"
    assert ui.secret not in page.content()


def test_sign_in_wrong_password_then_right(page: Page, ui: UIProcess) -> None:
    expect(page.get_by_label("Username")).to_be_focused()
    page.get_by_label("Username").fill("alice")
    shot(page, "sign-in")
    page.get_by_label("Password").fill(WRONG)
    page.get_by_label("Password").press("Enter")  # keyboard: Enter submits
    expect(page.get_by_role("alert")).to_contain_text("refused")
    keep_html(page)
    page.get_by_label("Password").fill(PW["alice@arena"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#me")).to_have_text("alice")
    expect(page.locator("#live")).to_have_text("Live")


def test_same_account_target_connects_without_prompt(page: Page) -> None:
    target = page.locator('.target[data-target="arena-chat"]')
    expect(target).to_contain_text("connected as alice")
    expect(target).to_contain_text("same account system")
    expect(page.locator('.buddy[data-target="arena-chat"][data-user="dave"]')).to_be_visible()
    chatter = page.locator('.target[data-target="chatter"]')
    expect(chatter).to_have_attribute("data-state", "not linked")
    expect(chatter.get_by_role("button", name="Connect chatter")).to_be_visible()


def test_link_chatter_through_the_prompt_form(page: Page, world: World) -> None:
    page.get_by_role("button", name="Connect chatter").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text("Sign in to chatter")
    assert dialog.get_by_label("Password").get_attribute("type") == "password"
    dialog.get_by_label("Username").fill("alice")
    dialog.get_by_label("Password").fill(WRONG)
    dialog.get_by_role("button", name="Sign in").click()
    # the resolver asks again, with the server's reason; nothing was stored
    expect(page.locator("#prompt-reason")).to_contain_text("invalid username or password")
    expect(page.locator("#prompt-reason")).to_contain_text("attempt 2 of 3")
    assert links_in_vault(world) == []
    expect(dialog.get_by_label("Username")).to_have_value("alice")  # kept for the retry
    expect(dialog.get_by_label("Password")).to_have_value("")
    keep_html(page)
    shot(page, "targets-and-prompt")
    dialog.get_by_label("Password").fill(PW["alice@chatter"])
    dialog.get_by_label("Password").press("Enter")
    expect(dialog).to_be_hidden()
    chatter = page.locator('.target[data-target="chatter"]')
    expect(chatter).to_have_attribute("data-state", "linked")
    expect(chatter).to_contain_text("connected as alice")
    links = links_in_vault(world)
    assert [(str(ln.target), ln.remote_account_name, str(ln.state)) for ln in links] == [
        ("chatter", "alice", "linked")]


def test_one_buddy_list_grouped_by_app(page: Page) -> None:
    groups = page.locator(".group")
    expect(groups).to_have_count(2)
    expect(groups.nth(0).get_by_role("heading")).to_contain_text("arena-chat")
    expect(groups.nth(1).get_by_role("heading")).to_contain_text("chatter")
    for user in ("bob", "carol"):
        expect(page.locator(f'.buddy[data-target="chatter"][data-user="{user}"]')
               ).to_have_attribute("data-presence", "offline")


def test_history_scrolls_back(page: Page, world: World) -> None:
    bob = world.peer("bob")
    for i in range(1, 41):
        bob.send("alice", f"old message {i}")
    page.locator('.buddy[data-target="chatter"][data-user="bob"]').click()
    expect(page.locator("#chat-h")).to_have_text("Chat with Bob (@bob) on chatter")
    expect(page.get_by_label("Message to Bob")).to_be_focused()
    messages = page.locator("#messages .msg")
    expect(messages).to_have_count(30)
    expect(messages.last).to_contain_text("old message 40")
    expect(page.locator("#older")).to_be_visible()
    page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")  # scroll back
    expect(messages).to_have_count(40)
    expect(messages.first).to_contain_text("old message 1")
    expect(page.locator("#older")).to_be_hidden()


def test_live_messages_around_a_history_load_keep_their_order(page: Page,
                                                              world: World) -> None:
    """A message that arrives live while the history is on its way is shown once, after
    the history it is newer than (it used to be put first, then the history after it)."""
    carol = world.peer("carol")
    for i in (1, 2, 3):
        carol.send("alice", f"earlier {i}")
    held: list[str] = []

    def hold_history(route: Any) -> None:
        answer = route.fetch()  # the history as it is now ...
        if not held:
            held.append(route.request.url)
            carol.send("alice", "sent while the history loaded")  # ... then one live
            time.sleep(1.5)  # the event reaches the page before the history does
        route.fulfill(response=answer)

    page.route("**/agent/v1/history/chatter/carol*", hold_history)
    page.locator('.buddy[data-target="chatter"][data-user="carol"]').click()
    messages = page.locator("#messages .msg")
    expect(messages).to_have_count(4)
    page.unroute("**/agent/v1/history/chatter/carol*")
    assert held
    assert [t.strip() for t in page.locator("#messages .msg .body").all_inner_texts()] == [
        "earlier 1", "earlier 2", "earlier 3", "sent while the history loaded"]
    page.locator('.buddy[data-target="chatter"][data-user="bob"]').click()
    expect(page.locator("#chat-h")).to_have_text("Chat with Bob (@bob) on chatter")
    expect(page.locator("#messages .msg").last).to_contain_text("old message 40")


def test_messages_both_ways_live(page: Page, world: World) -> None:
    bob = world.peer("bob")
    bob.send("alice", "hi alice, game tonight?")
    expect(page.locator("#messages .msg.theirs").last).to_contain_text("game tonight?")
    compose = page.get_by_label("Message to Bob")
    compose.fill("sure, 9pm!")
    compose.press("Enter")
    expect(compose).to_have_value("")
    expect(page.locator("#messages .msg.mine").last).to_contain_text("sure, 9pm!")
    expect(page.locator("#messages .msg.pending")).to_have_count(0)
    wait_until(lambda: any(m["body"] == "sure, 9pm!" for m in bob.history("alice")),
               what="bob to see alice's message")
    assert [m["body"] for m in bob.history("alice")].count("sure, 9pm!") == 1
    # a message from someone whose chat is not open: a badge on that buddy, and a notice
    world.peer("carol").send("alice", "are you there?")
    carol = page.locator('.buddy[data-target="chatter"][data-user="carol"]')
    expect(carol.locator(".unread")).to_have_text("1 new")
    expect(page.locator("#notices")).to_contain_text("carol on chatter: are you there?")
    expect(page.locator("#messages")).not_to_contain_text("are you there?")


def test_nothing_typed_is_lost_when_the_connection_drops(page: Page, world: World) -> None:
    bob = world.peer("bob")
    compose = page.get_by_label("Message to Bob")
    # 1. the UI server is out of reach: the message waits in the outbox
    page.context.set_offline(True)
    compose.fill("typed while offline")
    compose.press("Enter")
    expect(page.locator("#messages .msg.pending")).to_contain_text("typed while offline")
    outbox = page.evaluate("JSON.parse(localStorage.getItem('interapp.outbox'))")
    assert [item["body"] for item in outbox] == ["typed while offline"]
    page.context.set_offline(False)
    expect(page.locator("#messages .msg.pending")).to_have_count(0, timeout=15_000)
    # 2. the request reaches the server but the answer is lost: resent, delivered once
    lost: list[str] = []

    def lose_answer(route: Any) -> None:
        if not lost:
            route.fetch()  # the UI server gets it and sends it to chatter ...
            lost.append(route.request.post_data or "")
            route.abort()  # ... but the page never hears back
        else:
            route.continue_()

    page.route("**/agent/v1/messages", lose_answer)
    compose.fill("answer lost once")
    compose.press("Enter")
    expect(page.locator("#messages .msg.pending")).to_have_count(0, timeout=15_000)
    page.unroute("**/agent/v1/messages")
    assert lost
    bodies = [m["body"] for m in bob.history("alice")]
    assert bodies.count("typed while offline") == 1
    assert bodies.count("answer lost once") == 1
    # 3. a reload (or a crash of the tab) keeps what was not sent yet
    page.route("**/agent/v1/messages", lambda route: route.abort())
    compose.fill("survives a reload")
    compose.press("Enter")
    expect(page.locator("#messages .msg.pending")).to_contain_text("survives a reload")
    page.unroute("**/agent/v1/messages")
    page.reload()
    wait_until(lambda: any(m["body"] == "survives a reload" for m in bob.history("alice")),
               timeout=15, what="the queued message to be sent after the reload")
    wait_until(lambda: page.evaluate("JSON.parse(localStorage.getItem('interapp.outbox'))") == [],
               what="the outbox to empty")
    assert [m["body"] for m in bob.history("alice")].count("survives a reload") == 1


def test_target_outage_degrades_then_recovers_and_the_queue_is_sent(page: Page,
                                                                    world: World) -> None:
    chatter = world.servers["chatter"]
    bob = world.peer("bob")
    chatter.stop()
    target = page.locator('.target[data-target="chatter"]')
    expect(target).to_have_attribute("data-state", "degraded", timeout=15_000)
    expect(page.locator('.group[data-target="chatter"]')).to_contain_text("reconnecting")
    page.locator('.buddy[data-target="chatter"][data-user="bob"]').click()
    compose = page.get_by_label("Message to Bob")
    compose.fill("written while chatter was down")
    compose.press("Enter")
    expect(page.locator("#messages .msg.pending")).to_contain_text("waiting to send")
    chatter.start()
    expect(target).to_have_attribute("data-state", "linked", timeout=20_000)
    expect(target).to_have_attribute("data-connected", "yes")
    expect(page.locator("#messages .msg.pending")).to_have_count(0, timeout=15_000)
    bodies = [m["body"] for m in bob.history("alice")]
    assert bodies.count("written while chatter was down") == 1
    bob.send("alice", "back again")  # the live stream resumed
    expect(page.locator("#messages .msg.theirs").last).to_contain_text("back again")


def test_a_target_added_by_the_cli_shows_up(page: Page, world: World) -> None:
    from interapp.host.config import HostConfig, Target

    config = HostConfig(world.home)
    targets = config.targets()
    config.save_targets({**targets, "later": Target("later", "interapp",
                                                    world.servers["chatter"].url)})
    later = page.locator('.target[data-target="later"]')
    expect(later).to_have_attribute("data-state", "not linked", timeout=10_000)
    expect(later.get_by_role("button", name="Connect later")).to_be_visible()
    config.save_targets(targets)
    expect(later).to_have_count(0, timeout=10_000)


def test_buddy_comes_online_live(page: Page, world: World) -> None:
    bob = world.peer("bob")
    bob.presence("online", "in the lobby")
    button = page.locator('.buddy[data-target="chatter"][data-user="bob"]')
    expect(button).to_have_attribute("data-presence", "online")
    expect(button).to_contain_text("in the lobby")
    expect(page.locator("#notices")).to_contain_text("Bob came online on chatter (in the lobby)")
    world.peer("carol").presence("away", "brb")
    expect(page.locator('.buddy[data-target="chatter"][data-user="carol"]')
           ).to_have_attribute("data-presence", "away")


def bob_answers(world: World) -> Any:
    """bob's own event stream at chatter (a real WebSocket, bob's token)."""
    bob = world.peer("bob")
    url = world.servers["chatter"].url.replace("http://", "ws://") + "/v1/events"
    return ws_connect(url, additional_headers={
        "Authorization": bob.http.headers["Authorization"]}, open_timeout=10)


def next_answer(ws: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        event: dict[str, Any] = json.loads(ws.recv(timeout=15))
        if event["type"] == "invite_answer":
            return event
    raise AssertionError("no invite_answer reached bob")


def test_buddy_activity_and_invite_cards(page: Page, world: World) -> None:
    """Issue 15: the buddy list shows a buddy's activity, and an invite is a card with Join
    (accept, then the join link in a new window) and Decline; bob hears each answer."""
    bob = world.peer("bob")
    started = (datetime.now(UTC) - timedelta(minutes=12, seconds=5)).isoformat()
    arena = {"name": "Arena", "details": "Ranked 2v2", "party": {"id": "p-1", "size": 2,
                                                                 "max": 4},
             "started_at": started, "join": {"url": "https://arena.example/j/1"}}
    resp = bob.http.put("/v1/presence", json={"activity": arena})
    assert resp.status_code == 200, resp.text
    button = page.locator('.buddy[data-target="chatter"][data-user="bob"]')
    expect(button.locator(".activity")).to_have_text("Bob — Arena · Ranked 2v2 · 2/4 · 12 min")
    joined: list[str] = []

    def arena_site(route: Any) -> None:
        joined.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<p>joined</p>")

    page.context.route("https://arena.example/**", arena_site)
    with bob_answers(world) as answers:
        sent = bob.http.post("/v1/invites", json={"to": "alice", "activity": arena,
                                                  "message": "one more?"})
        assert sent.status_code == 201, sent.text
        card = page.locator(f'.invite-card[data-invite="{sent.json()["id"]}"]')
        expect(card).to_contain_text("Bob invites you to Arena · Ranked 2v2 · 2/4 · 12 min")
        expect(card).to_contain_text("“one more?”")
        expect(card).to_contain_text("Join opens arena.example")
        page.evaluate("document.getElementById('notices').replaceChildren()")
        shot(page, "activity-and-invite", full_page=True)
        with page.context.expect_page() as opened:
            card.get_by_role("button", name="Join").click()
        window = opened.value
        window.wait_for_load_state()
        assert window.url == "https://arena.example/j/1"
        window.close()
        expect(card).to_have_count(0)
        answer = next_answer(answers)
        assert (answer["id"], answer["state"]) == (sent.json()["id"], "accepted")
        # a second invite, declined: no window, bob hears "declined"
        again = bob.http.post("/v1/invites", json={"to": "alice",
                                                   "join_url": "https://arena.example/j/2"})
        assert again.status_code == 201, again.text
        card = page.locator(f'.invite-card[data-invite="{again.json()["id"]}"]')
        expect(card).to_contain_text("Bob invites you")
        card.get_by_role("button", name="Decline").click()
        expect(card).to_have_count(0)
        answer = next_answer(answers)
        assert (answer["id"], answer["state"]) == (again.json()["id"], "declined")
    page.context.unroute("https://arena.example/**")
    assert joined == ["https://arena.example/j/1"]
    expect(page.locator("#invites-panel")).to_be_hidden()
    # bob stops playing: the line goes
    assert bob.http.put("/v1/presence", json={"activity": None}).status_code == 200
    expect(button.locator(".activity")).to_have_count(0)


def test_set_own_presence_on_every_connected_target(page: Page, world: World) -> None:
    page.get_by_label("Presence").select_option("away")
    page.get_by_label("Status text").fill("in a match")
    page.get_by_role("button", name="Set", exact=True).click()
    expect(page.locator("#presence-result")).to_contain_text("away — in a match on arena-chat, "
                                                             "chatter")
    alice = next(c for c in world.peer("bob").contacts() if c["username"] == "alice")
    assert (alice["presence"], alice["status_text"]) == ("away", "in a match")


def test_screens_for_the_docs(page: Page, world: World) -> None:
    page.locator('.buddy[data-target="chatter"][data-user="bob"]').click()
    expect(page.locator("#messages .msg").last).to_contain_text("back again")
    world.peer("bob").send("alice", "see you at 9 then!")
    expect(page.locator("#messages .msg").last).to_contain_text("see you at 9")
    page.evaluate("document.getElementById('notices').replaceChildren()")
    world.peer("carol").presence("offline")
    world.peer("carol").presence("online", "back from lunch")
    expect(page.locator("#notices")).to_contain_text("Carol came online on chatter")
    keep_html(page)
    shot(page, "buddies-and-chat")


def test_narrow_screen_has_no_horizontal_overflow(page: Page) -> None:
    page.set_viewport_size(PHONE)
    page.reload()
    expect(page.locator("#live")).to_have_text("Live")
    page.locator('.buddy[data-target="chatter"][data-user="bob"]').click()
    expect(page.locator("#messages .msg").last).to_contain_text("see you at 9")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide at 390 px"
    shot(page, "narrow-390", full_page=True)
    page.set_viewport_size(DESKTOP)


def test_relink_repairs_the_same_link(page: Page, world: World) -> None:
    from interapp.vault import LinkState

    (before,) = links_in_vault(world)
    vault = Vault.open(world.home / "vault.db", env=world.env)
    try:  # as if the target had refused the stored credential
        vault.set_state(before.id, LinkState.NEEDS_REAUTH, "refresh token refused")
    finally:
        vault.close()
    target = page.locator('.target[data-target="chatter"]')
    expect(target).to_have_attribute("data-state", "needs_reauth")
    expect(target.locator(".reason")).to_have_text("refresh token refused")
    target.get_by_role("button", name="Re-link chatter").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Username")).to_have_value("alice")  # the link's account
    expect(dialog.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PW["alice@chatter"])
    page.keyboard.press("Enter")
    expect(dialog).to_be_hidden()
    expect(target).to_have_attribute("data-state", "linked")
    expect(target).to_have_attribute("data-connected", "yes")
    (after,) = links_in_vault(world)
    assert after.id == before.id and after.remote_account_name == "alice"


def test_unlink_with_confirmation_and_result(page: Page, world: World) -> None:
    page.goto(page.url.split("#")[0])
    page.get_by_role("link", name="Unlink chatter…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Unlink chatter?")
    expect(page.locator("main")).to_contain_text("alice")
    page.get_by_role("link", name="Cancel").click()  # changing one's mind changes nothing
    assert len(links_in_vault(world)) == 1
    page.get_by_role("link", name="Unlink chatter…").click()
    page.get_by_role("button", name="Unlink chatter").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Unlinked chatter")
    expect(page.locator("#unlink-result")).to_contain_text(
        "Remote revocation: revoked at the target")
    expect(page.locator("#unlink-result")).to_contain_text("Local credential destroyed")
    keep_html(page)
    assert links_in_vault(world) == []
    page.get_by_role("link", name="Back to your apps").click()
    chatter = page.locator('.target[data-target="chatter"]')
    expect(chatter).to_have_attribute("data-state", "not linked")
    expect(chatter.get_by_role("button", name="Connect chatter")).to_be_visible()
    expect(page.locator('.group[data-target="chatter"]')).to_have_count(0)


def test_declining_the_prompt_stores_nothing(page: Page, world: World) -> None:
    page.get_by_role("button", name="Connect chatter").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(page.locator('.target[data-target="chatter"] .problem')).to_contain_text("declined")
    assert links_in_vault(world) == []


def test_no_secret_in_pages_output_or_data_folder(page: Page, world: World,
                                                  ui: UIProcess) -> None:
    # the agent's token stays in the UI server: not in a page, an answer, a frame or storage
    agent_token = (world.home / "agent.token").read_text().strip()
    assert len(agent_token) >= 32
    assert any('"seq"' in frame for frame in SEEN_WIRE)  # the event frames were seen
    stored = page.evaluate("JSON.stringify(localStorage) + document.cookie")
    for text in [*SEEN_HTML, *SEEN_WIRE, stored, page.content()]:
        assert agent_token not in text
    hidden = world.secrets_to_hide()
    for html in [*SEEN_HTML, *SEEN_WIRE]:
        for secret in hidden:
            assert secret not in html
        assert ui.secret not in html
    log = ui.output()
    for secret in hidden:
        assert secret not in log
    # the UI server prints its address (with the launch secret) once, and nothing else of it
    assert log.count(ui.secret) == 1
    for path in world.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in hidden:
                assert secret.encode() not in data, f"{secret!r} in {path}"


def test_the_cli_sees_what_the_ui_did(world: World) -> None:
    """Same data folder and vault: the UI's sign-in is the CLI's sign-in."""
    from interapp.host import Host

    async def check() -> tuple[str | None, list[Any]]:
        async with Host.open(world.home, env=world.env) as host:
            return host.signed_in, await host.links()

    username, links = run_async(check)
    assert username == "alice"
    assert links == []
    r = httpx.get(f"{world.servers['chatter'].url}/.well-known/oauth-authorization-server")
    assert r.status_code == 200
    assert re.match(r"^http://127\.0\.0\.1:\d+$", r.json()["issuer"])


GRANTS = ("authorization_code", "password", "refresh_token")


def test_link_on_the_targets_own_sign_in_page(page: Page, world: World) -> None:
    """Issue 14: a target whose client may use the browser way is linked on its own sign-in
    page, opened by the UI in a new window; the link is finished when the page sends the
    browser back (to the agent's loopback listener) — no password typed into interapp."""
    from interapp.host import Host

    chatter = world.servers["chatter"]
    cid, secret = chatter.create_client("host-browser", redirect_uris=(
        "http://127.0.0.1/callback",), grant_types=GRANTS)
    assert secret is not None

    async def add() -> None:
        async with Host.open(world.home, env=world.env) as host:
            await host.add_target("chat2", plugin="interapp", server=chatter.url,
                                  client_id=cid, client_secret=secret)

    run_async(add)
    target = page.locator('.target[data-target="chat2"]')
    expect(target.get_by_role("button", name="Connect chat2")).to_be_visible(timeout=10_000)
    target.get_by_role("button", name="Connect chat2").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_have_text("Sign in to chat2")
    expect(dialog).to_contain_text("opens in a new window")
    assert dialog.locator("input").count() == 0  # nothing to type here
    with page.context.expect_page() as opened:
        dialog.get_by_role("button", name="Open chat2's sign-in page").click()
    window = opened.value
    window.wait_for_selector("#signin-form")
    assert window.url.startswith(f"{chatter.url}/oauth/authorize?")
    expect(dialog.get_by_role("button", name="Waiting for the sign-in…")).to_be_disabled()
    window.fill("#signin-username", "alice")
    window.fill("#signin-password", PW["alice@chatter"])
    window.click("#signin-submit")
    window.click("#consent-allow")
    window.wait_for_load_state()
    assert window.url.startswith("http://127.0.0.1:") and "/callback?" in window.url
    assert "Signed in" in window.inner_text("body")  # the agent's loopback listener
    window.close()
    expect(dialog).to_be_hidden(timeout=15_000)
    expect(target).to_have_attribute("data-state", "linked")
    expect(target).to_contain_text("connected as alice")
    expect(page.locator("#notices")).to_contain_text("connected to chat2 as alice")
    assert PW["alice@chatter"] not in page.content()
    links = {str(ln.target): ln for ln in links_in_vault(world)}
    assert links["chat2"].remote_account_name == "alice"


def test_sign_out(page: Page, world: World) -> None:
    page.goto(page.url.split("#")[0])
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value("alice")
