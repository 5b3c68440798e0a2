"""Rich presence and invites end to end through the host SDK over real XMPP and Matrix servers.

alice and bob each run a host signed in to the local application (the session's interapp
server) with a target on Prosody (``xmpp``) and on the session's Synapse (``matrix``). alice
sets her activity in the local app; bob's host sees it structured (``BuddyActivity`` and his
buddy list). alice invites bob; bob's host gets ``InviteReceived`` with the activity and join
link, accepts, and alice's host gets ``InviteAnswered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from xmpp_kit import linked_cli, raw_client

from interapp.host import Host, Scripted, events
from interapp.plugins.contract import InviteState, TargetConfig
from interapp.plugins.xmpp.client import XmppPlugin
from interapp.plugins.xmpp.demo import make_buddies
from interapp.presence import Activity, Join, Party
from interapp.secret import Secret
from interapp.testing import HomeApp
from interapp.testing.prosody import ProsodyServer
from interapp.testing.synapse import SynapseServer

pytest_plugins = ["interapp.testing.synapse"]
pytestmark = pytest.mark.anyio
E = TypeVar("E", bound=events.Event)

ARENA = Activity(name="Arena", details="Ranked 2v2", party=Party(id="p-9", size=2, max=4),
                 started_at=datetime.now(UTC) - timedelta(minutes=12),
                 join=Join("https://arena.example/join/9"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProsodyServer]:
    with ProsodyServer(tmp_path_factory.mktemp("prosody-rich-host")) as server:
        yield server


@contextlib.asynccontextmanager
async def host_for(home: HomeApp, target: str, plugin: str, server: str,
                   account: tuple[str, str]) -> AsyncIterator[Host]:
    local_user, local_password = home.new_user()
    async with await Host.open(memory=True) as host:
        await host.set_local(home.url, client_id=home.client_id,
                             client_secret=home.client_secret)
        await host.sign_in(local_user, local_password)
        await host.add_target(target, plugin=plugin, server=server)
        await host.connect(target, Scripted({"username": account[0],
                                             "password": account[1]}))
        yield host


async def next_of(stream: AsyncIterator[events.Event], kind: type[E], timeout: float = 15,
                  where: Callable[[E], bool] = lambda e: True) -> E:
    async def find() -> E:
        async for event in stream:
            if isinstance(event, kind) and where(event):
                return event
        raise AssertionError("the stream ended")

    return await asyncio.wait_for(find(), timeout)


async def round_trip(alice: Host, bob: Host, target: str, alice_id: str, bob_id: str,
                     carried: str) -> None:
    async with bob.events() as b_stream, alice.events() as a_stream:
        await asyncio.sleep(0.5)
        result = await alice.set_activity(ARENA, targets=[target])
        assert result.carried == {target: carried} and result.errors == {}
        seen = await next_of(b_stream, events.BuddyActivity,
                             where=lambda e: e.username == alice_id)
        assert seen.activity == ARENA and seen.target == target
        buddies: dict[str, Any] = {b.username: b for b in await bob.buddies(target)}
        assert buddies[alice_id].activity == ARENA
        sent = await alice.invite(target, bob_id, activity=ARENA, message="one more?",
                                  client_invite_id=secrets.token_hex(4))
        got = await next_of(b_stream, events.InviteReceived)
        assert got.invite.id == sent.id and got.invite.activity == ARENA
        assert got.invite.url == "https://arena.example/join/9"
        assert got.invite.message == "one more?"
        assert [i.id for i in await bob.invites(target)] == [sent.id]
        accepted = await bob.answer_invite(target, sent.id, True)
        assert accepted.state is InviteState.ACCEPTED
        answer = await next_of(a_stream, events.InviteAnswered)
        assert answer.invite.id == sent.id and answer.invite.state is InviteState.ACCEPTED


async def test_over_xmpp(prosody: ProsodyServer, interapp_home: HomeApp) -> None:
    alice = prosody.register(f"a{secrets.token_hex(4)}", "pw-alice-1"), "pw-alice-1"
    bob = prosody.register(f"b{secrets.token_hex(4)}", "pw-bob-1"), "pw-bob-1"
    await make_buddies(prosody.url, alice, bob)
    async with host_for(interapp_home, "x", "xmpp", prosody.url, alice) as ha, \
            host_for(interapp_home, "x", "xmpp", prosody.url, bob) as hb:
        await round_trip(ha, hb, "x", alice[0], bob[0], "structured")


async def test_over_matrix(matrix_synapse: SynapseServer, interapp_home: HomeApp) -> None:
    hs = matrix_synapse
    users = []
    for who in ("a", "b"):
        local, password = f"{who}_{secrets.token_hex(4)}", secrets.token_urlsafe(10)
        data = await hs.aregister(local, password)
        users.append((local, password, str(data["user_id"])))
    (a_local, a_pw, a_id), (b_local, b_pw, b_id) = users
    async with host_for(interapp_home, "m", "matrix", hs.url, (a_local, a_pw)) as ha, \
            host_for(interapp_home, "m", "matrix", hs.url, (b_local, b_pw)) as hb:
        await ha.add_buddy("m", b_id)
        for _ in range(100):
            try:
                await hb.accept_buddy("m", a_id)
                break
            except Exception:  # the room invite is not visible yet
                await asyncio.sleep(0.1)
        await round_trip(ha, hb, "m", a_id, b_id, "structured")


async def test_cli_over_xmpp(prosody: ProsodyServer, interapp_home: HomeApp,
                             tmp_path: Path) -> None:
    """The real ``interapp`` command, one process per step: ``status --activity-name …``
    reaches bob structured (PEP keeps it after the process ends, while alice is online with
    another client); ``invite`` reaches him with the join link; ``invites`` in a later process
    finds the open invite, and none once bob accepted."""
    alice = prosody.register(f"a{secrets.token_hex(4)}", "pw-alice-2"), "pw-alice-2"
    bob = prosody.register(f"b{secrets.token_hex(4)}", "pw-bob-2"), "pw-bob-2"
    await make_buddies(prosody.url, alice, bob)
    cli = linked_cli(interapp_home, prosody, alice, tmp_path / "alice")
    async with raw_client(prosody, alice, resource="game"):  # alice's other client: online
        await cli_steps(cli, prosody, alice, bob)


async def cli_steps(cli: Any, prosody: ProsodyServer, alice: tuple[str, str],
                    bob: tuple[str, str]) -> None:
    out = await asyncio.to_thread(cli.json, "status", "--activity-name", "Arena", "--details",
                                  "Ranked 2v2", "--party", "2/4")
    assert "x" in str(out)
    pb = XmppPlugin(TargetConfig(name="x", plugin="xmpp", server=prosody.url))
    try:
        await pb.login({"username": bob[0], "password": Secret(bob[1])})
        found = {b.username: b.activity for b in await pb.buddies()}[alice[0]]
        assert found is not None and (found.name, found.details) == ("Arena", "Ranked 2v2")
        assert found.party is not None and (found.party.size, found.party.max) == (2, 4)
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump() -> None:
            async for event in pb.events(None):
                await queue.put(event)

        task = asyncio.create_task(pump())
        try:
            await asyncio.sleep(0.3)
            sent = await asyncio.to_thread(cli.json, "invite", "x", bob[0], "--join-url",
                                           "arena://match/42", "--message", "gg?")
            while (event := await asyncio.wait_for(queue.get(), 15)).type != "invite":
                pass
            assert event.data["invite"]["id"] == sent["id"]
            assert "arena://match/42" in event.data["body"]
            listed = await asyncio.to_thread(cli.json, "invites")
            assert [i["id"] for i in listed["invites"]] == [sent["id"]]
            await pb.answer_invite(sent["id"], True)
            listed = await asyncio.to_thread(cli.json, "invites")
            assert listed["invites"] == []
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await pb.close()
