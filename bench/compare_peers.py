"""The three networks of the side-by-side message benchmark (issue 6), ready to measure.

:class:`Peers` starts, on 127.0.0.1: the measured ``interapp serve`` (SQLite, one worker) and an
idle second one as the host's *local application* (it mints the same-account assertions; the
target trusts its issuer), both seeded before they start; Synapse
(:class:`interapp.testing.synapse.SynapseServer`) and Prosody
(:class:`interapp.testing.prosody.ProsodyServer`). Each network gets ``pairs`` pairs of buddies
(``s00``/``r00`` …: seeded on interapp, by the xmpp plug-in's subscription handshake on Prosody,
by ``add_buddy``/``accept_buddy`` through the host on Synapse), every account linked through one
:class:`~interapp.host.Host` per network with ``Host.connect``. Everything started is
registered on the caller's :class:`contextlib.AsyncExitStack`, so it is stopped (by PID) on
success, error or Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import (
    CpuMeter,
    Proc,
    bounded,
    open_host,
    plugin_instance,
    seed_app,
    seeding,
    serve,
    vault_key,
)
from benchkit import versions as kit_versions

from interapp.secret import Secret

NETWORKS = ("interapp", "xmpp", "matrix")  # the order they are measured in
LABELS = {"interapp": "interapp serve", "xmpp": "Prosody (xmpp)",
          "matrix": "Synapse (matrix)"}
PASSWORD = "compare-bench-pw-1"  # throw-away accounts on throw-away servers
SETUP_CONCURRENCY = 8


class PeerMissing(RuntimeError):
    """A peer server (Prosody or Synapse) is not installed."""


def check_peers() -> None:
    """Raise :class:`PeerMissing` naming every missing peer and ``make peers``."""
    from interapp.testing.prosody import ProsodyNotInstalled, find_prosody
    from interapp.testing.synapse import SynapseUnavailable, find_synapse_python

    problems = []
    try:
        find_prosody()
    except ProsodyNotInstalled as exc:
        problems.append(str(exc))
    try:
        find_synapse_python()
    except SynapseUnavailable as exc:
        problems.append(str(exc))
    if problems:
        raise PeerMissing("a peer server is missing — run `make peers`:\n  "
                          + "\n  ".join(problems))


@dataclass(frozen=True)
class Account:
    """A remote account: what the user types, and how buddies address it."""

    username: str
    password: str
    handle: str


@dataclass
class Network:
    """One network under test: its server process and its pairs of buddies."""

    name: str
    url: str
    pid: int
    senders: list[Account] = field(default_factory=list)
    receivers: list[Account] = field(default_factory=list)

    @property
    def label(self) -> str:
        """Human name (server and plug-in)."""
        return LABELS[self.name]

    def target(self, role: str, i: int) -> str:
        """The host's target name for pair ``i``'s sender (``s``) or receiver (``r``)."""
        return f"{self.name}-{role}{i:02d}"


SELF, OTHER = "load generator + host", "every other process"  # CPU table columns


def cpu_meter(pids: dict[str, int]) -> CpuMeter:
    """The kit's meter on the servers, with this process named as what it is here."""
    return CpuMeter(pids, me=SELF, other=OTHER)


class Peers:
    """The servers, accounts, buddies and host links of one benchmark run."""

    def __init__(self, folder: Path, pairs: int, stack: contextlib.AsyncExitStack,
                 say: Callable[[str], None]) -> None:
        self.folder = folder
        self.pairs = pairs
        self.stack = stack
        self.say = say
        self.networks: dict[str, Network] = {}
        self.pids: dict[str, int] = {}  # process label → PID, for the CPU tables
        self.hosts: dict[str, Any] = {}  # network → interapp.host.Host
        self.home_url = ""
        self.target_client: tuple[str, Secret] | None = None

    # --- servers ---------------------------------------------------------------------------

    async def _serve(self, name: str, db: Path) -> Proc:
        server = await asyncio.to_thread(serve, name, db, self.folder, wait=False)
        self.stack.callback(server.stop)
        await server.wait_ready("/healthz")
        return server

    async def start(self) -> None:
        """Start every server, make the accounts and buddies, link them through the host."""
        from interapp.testing.prosody import ProsodyServer
        from interapp.testing.synapse import SynapseServer

        synapse = SynapseServer(self.folder / "synapse")
        self.stack.callback(synapse.stop)
        synapse.launch()  # the slowest to start: it imports while the rest is set up
        prosody = ProsodyServer(self.folder / "prosody")
        self.stack.callback(prosody.stop)
        await asyncio.to_thread(prosody.start)
        assert prosody.pid is not None
        home = await self._start_home()
        target = await self._start_target()
        await asyncio.to_thread(synapse.wait_ready, 120)
        assert synapse.pid is not None
        self.pids = {"interapp serve": target.pid, "Prosody": prosody.pid,
                     "Synapse": synapse.pid, "local app (idle)": home.pid}
        self.say(f"servers up: interapp serve pid {target.pid}, Prosody pid {prosody.pid}, "
                 f"Synapse pid {synapse.pid}, local application pid {home.pid}")
        self.networks = {
            "interapp": Network("interapp", f"http://127.0.0.1:{target.port}", target.pid),
            "xmpp": Network("xmpp", prosody.url, prosody.pid),
            "matrix": Network("matrix", synapse.url, synapse.pid)}
        await asyncio.gather(self._accounts_interapp(), self._accounts_xmpp(prosody),
                             self._accounts_matrix(synapse))
        await self._hosts()
        await self._link_all()
        await self._matrix_buddies()

    async def _start_home(self) -> Proc:
        """The local application: user ``bench`` and the host's client."""
        client_id, secret = await seed_app(self.folder / "local.db", PASSWORD, ["bench"])
        self.home_client = (client_id, Secret(secret))
        server = await self._serve("local", self.folder / "local.db")
        self.home_url = f"http://127.0.0.1:{server.port}"
        return server

    async def _start_target(self) -> Proc:
        """The measured server: 2 x pairs users, pairwise buddies, the host's client, and trust
        in the local application's issuer (same-account logins)."""
        from interapp.server import accounts

        db_path = self.folder / "target.db"
        async with seeding(f"sqlite:///{db_path}", PASSWORD) as sd:
            for i in range(self.pairs):
                await sd.buddies(await sd.user(f"s{i:02d}"), await sd.user(f"r{i:02d}"))
            client_id, secret = await sd.client("bench-host")
            # the seeded accounts are local: the home app may sign in to them
            await accounts.trust_issuer(sd.conn, self.home_url, jwks=None, jwks_url=None,
                                        may_sign_in_local_accounts=True)
        assert secret is not None
        self.target_client = (str(client_id), Secret(secret))
        return await self._serve("chatter", db_path)

    # --- accounts and buddies --------------------------------------------------------------

    async def _accounts_interapp(self) -> None:
        net = self.networks["interapp"]
        for i in range(self.pairs):
            net.senders.append(Account(f"s{i:02d}", PASSWORD, f"s{i:02d}"))
            net.receivers.append(Account(f"r{i:02d}", PASSWORD, f"r{i:02d}"))

    async def _accounts_xmpp(self, prosody: Any) -> None:
        from interapp.plugins.xmpp.demo import make_buddies

        net = self.networks["xmpp"]

        def register(user: str) -> Callable[[], Awaitable[str]]:
            return lambda: asyncio.to_thread(prosody.register, user, PASSWORD)

        names = [f"{r}{i:02d}" for i in range(self.pairs) for r in "sr"]
        jids = await bounded(4, [register(n) for n in names])
        for i in range(self.pairs):
            s, r = jids[2 * i], jids[2 * i + 1]
            net.senders.append(Account(s, PASSWORD, s))
            net.receivers.append(Account(r, PASSWORD, r))
        await bounded(SETUP_CONCURRENCY, [
            (lambda a=a, b=b: make_buddies(prosody.url, (a.username, a.password),
                                           (b.username, b.password)))
            for a, b in zip(net.senders, net.receivers, strict=True)])
        self.say(f"Prosody: {2 * self.pairs} accounts, {self.pairs} pairs of buddies "
                 "(subscription handshake by the xmpp plug-in)")

    async def _accounts_matrix(self, synapse: Any) -> None:
        net = self.networks["matrix"]
        names = [f"{r}{i:02d}" for i in range(self.pairs) for r in "sr"]
        await bounded(SETUP_CONCURRENCY, [(lambda n=n: synapse.aregister(n, PASSWORD))
                                          for n in names])
        for i in range(self.pairs):
            net.senders.append(Account(f"s{i:02d}", PASSWORD, synapse.user_id(f"s{i:02d}")))
            net.receivers.append(Account(f"r{i:02d}", PASSWORD, synapse.user_id(f"r{i:02d}")))

    async def _matrix_buddies(self) -> None:
        """Each pair opens a direct room through the host (``add_buddy``/``accept_buddy``)."""
        from interapp.errors import ConfigError

        net = self.networks["matrix"]
        host = self.hosts["matrix"]

        async def befriend(i: int) -> None:
            await host.add_buddy(net.target("s", i), net.receivers[i].handle)
            for attempt in range(50):
                try:
                    await host.accept_buddy(net.target("r", i), net.senders[i].handle)
                    return
                except ConfigError:  # the invite is not in the receiver's /sync yet
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.1)

        await bounded(SETUP_CONCURRENCY, [(lambda i=i: befriend(i)) for i in range(self.pairs)])
        self.say(f"Synapse: {2 * self.pairs} accounts, {self.pairs} direct rooms "
                 "(add_buddy/accept_buddy through the host)")

    # --- the hosts ---------------------------------------------------------------------------

    async def _hosts(self) -> None:
        """One :class:`~interapp.host.Host` per network (so that one network's event streams
        never run during another's phases), each signed in to the local application."""
        assert self.target_client is not None
        cid, secret = self.target_client
        for net in self.networks.values():
            host = await open_host(self.folder / f"host-{net.name}", self.home_url,
                                   self.home_client, "bench", PASSWORD, vault_key=vault_key(),
                                   env={}, call_timeout=60)
            self.stack.push_async_callback(host.aclose)
            self.hosts[net.name] = host
            mine = net.name == "interapp"
            for i in range(self.pairs):
                for role in "sr":
                    await host.add_target(net.target(role, i), plugin=net.name, server=net.url,
                                          client_id=cid if mine else None,
                                          client_secret=secret if mine else None)
            if mine:
                await host.add_target("interapp-shared", plugin="interapp", server=net.url,
                                      client_id=cid, client_secret=secret,
                                      account_system="shared")

    async def _link_all(self) -> None:
        """``Host.connect`` every account with its answers: the claim-1 prompt branch."""
        from interapp.host import Scripted

        async def link(host: Any, name: str, account: Account) -> None:
            await host.connect(name, Scripted({"username": account.username,
                                               "password": account.password}))

        jobs = []
        for net in self.networks.values():
            host = self.hosts[net.name]
            for i in range(self.pairs):
                jobs.append(lambda h=host, n=net.target("s", i), a=net.senders[i]: link(h, n, a))
                jobs.append(lambda h=host, n=net.target("r", i), a=net.receivers[i]:
                            link(h, n, a))
        await bounded(SETUP_CONCURRENCY, jobs)
        self.say(f"hosts: {len(jobs)} links stored in their vaults (Host.connect, prompt "
                 "branch)")

    def plugin_for(self, net_name: str, account_system: str = "separate") -> Any:
        """A fresh plug-in object for ``net_name``'s server (what a host starts for a target),
        not connected: the login benchmarks call the plug-in directly."""
        net = self.networks[net_name]
        cid, secret = (self.target_client or (None, None)) if net_name == "interapp" \
            else (None, None)
        return plugin_instance(net_name, net.url, client_id=cid, client_secret=secret,
                               account_system=account_system)


def versions() -> str:
    """Versions of the three servers and the plug-ins' client libraries."""
    from interapp.testing.synapse import find_synapse_python

    found = {"interapp": kit_versions(["interapp"])}
    for name, argv in (("Synapse", [str(find_synapse_python()), "-c",
                                    "import synapse; print(synapse.__version__)"]),
                       ("Prosody", ["dpkg-query", "-W", "-f", "${Version}", "prosody"])):
        out = "?"
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                 check=False).stdout.strip() or "?"
        found[name] = f"{name} {out}"
    return (f"{found['interapp']}, {found['Synapse']}, {found['Prosody']}; "
            + kit_versions(["httpx", "websockets", "slixmpp"]))
