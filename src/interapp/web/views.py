"""What the server-rendered pages show, built from the agent's answers (nothing of its own).

Theory of operation: every page and fragment is rendered from one round of calls to the
agent (:class:`~interapp.web.agentlink.AgentLink`): ``GET /state`` (the local application,
who is signed in, the targets, the presence it holds, the open prompts), ``GET /links`` (the
link states and their reasons) and, for the buddy list, ``GET /buddies?target=`` of each
connected target. :class:`Views` turns them into the plain objects the templates read. The
one thing it keeps is the last buddy list of each target it showed, so a target that is
reconnecting keeps its group (marked *reconnecting…*) instead of emptying the list; it is
dropped as soon as the target is neither connected nor reconnecting (unlinked, signed out).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from interapp.host import InterappError
from interapp.presence import (
    PRESENCE_STATES,
    PresenceState,
    activity_from_json,
    check_join_url,
    render_activity,
)
from interapp.web.agentlink import AgentLink

RECONNECTING = ("degraded", "connecting")


@dataclass
class TargetView:
    """One target as the targets list shows it."""

    name: str
    plugin: str
    server: str
    account_system: str
    link_state: str  # linked | degraded | needs_reauth | revoked | not linked
    reason: str
    remote_account: str | None
    connected: bool
    busy: bool
    problem: str
    branch: str

    @property
    def can_connect(self) -> bool:
        """Connect is offered when not connected and not connecting."""
        return not self.connected and not self.busy and not self.needs_relink

    @property
    def needs_relink(self) -> bool:
        """The link exists but the target no longer accepts it."""
        return self.link_state in ("needs_reauth", "revoked")

    @property
    def has_link(self) -> bool:
        """A stored link exists (so it can be unlinked)."""
        return self.link_state != "not linked"


@dataclass
class BuddyView:
    """One buddy with its presence."""

    target: str
    username: str
    display_name: str
    presence: str
    status_text: str
    activity_text: str = ""
    """What they are doing (rich presence), readable: ``Arena · Ranked 2v2 · 2/4 · 12 min``."""


@dataclass
class BuddyGroup:
    """The buddies of one target."""

    target: str
    plugin: str
    account: str
    connected: bool = True
    buddies: list[BuddyView] = field(default_factory=list)


@dataclass
class PersonAccountView:
    """One account of a merged person, with its own presence."""

    target: str
    user: str
    display_name: str
    presence: str
    status_text: str
    activity_text: str = ""
    listed: bool = True
    """False when its target's buddy list is not at hand (not connected, or not a buddy)."""


@dataclass
class PersonView:
    """One row for a merged person: the best presence across the accounts."""

    id: str
    name: str
    presence: str
    status_text: str
    target: str
    """The account the presence comes from."""
    user: str
    accounts: list[PersonAccountView] = field(default_factory=list)

    @property
    def activity_text(self) -> str:
        """What they are doing, from the first account that says (the best one first)."""
        best = [a for a in self.accounts if a.target == self.target and a.user == self.user]
        for a in best + self.accounts:
            if a.activity_text:
                return a.activity_text
        return ""


@dataclass
class InviteView:
    """An invite a buddy sent, waiting for Join or Decline."""

    target: str
    id: str
    sender: str
    sender_name: str
    what: str
    message: str
    url: str
    expires_at: str

    @property
    def where(self) -> str:
        """Where Join goes, short: the link's host (or its scheme, for an app's own link)."""
        parts = urlsplit(self.url)
        return parts.netloc or f"{parts.scheme}:"


@dataclass
class LocalView:
    """The local application and who is signed in there."""

    configured: bool
    problem: str = ""
    server: str = ""
    username: str | None = None
    signed_in: bool = False


@dataclass
class Snapshot:
    """One round of the agent's answers."""

    state: dict[str, Any]
    links: dict[str, dict[str, Any]]

    @property
    def local(self) -> LocalView:
        """The local application, as the pages show it."""
        local = self.state.get("local")
        if local is None:
            return LocalView(configured=False, problem="no local application is configured "
                             "yet: run 'interapp local --server URL --client-id ID'")
        return LocalView(True, "", str(local["server"]), local.get("username"),
                         self.state.get("user") is not None)

    @property
    def presence(self) -> tuple[str, str]:
        """The presence the agent holds (what was last set, by any client)."""
        held = self.state.get("presence") or {}
        return str(held.get("state", "online")), str(held.get("status_text", ""))

    def rows(self) -> dict[str, dict[str, Any]]:
        """The agent's target rows by name."""
        return {str(t["name"]): t for t in self.state.get("targets", [])}

    def targets(self) -> list[TargetView]:
        """Every configured target (and any linked one no longer configured)."""
        rows = self.rows()
        return [self._view(rows.get(n), n) for n in sorted(set(rows) | set(self.links))]

    def _view(self, row: dict[str, Any] | None, name: str) -> TargetView:
        ln = self.links.get(name)
        problem = str(row.get("problem") or "") if row else \
            "no longer in targets.toml (unlink it, or add it back)"
        state = str(row["state"]) if row else "idle"
        account = row.get("account") if row else None
        reason = str(ln.get("reason") or "") if ln else ""
        if ln is not None and ln.get("server_changed"):
            reason = f"made with {ln['server']}; the target now names another server"
        return TargetView(
            name=name, plugin=str(row["plugin"]) if row else "?",
            server=str(row["server"]) if row else "",
            account_system=str(row["account_system"]) if row else "separate",
            link_state=str(ln["state"]) if ln else "not linked", reason=reason,
            remote_account=(ln or {}).get("remote_account") or account,
            connected=state in ("connected", "degraded") and account is not None,
            busy=state == "connecting" or bool(row and row.get("prompt")),
            problem=problem, branch=str(row.get("branch") or "") if row else "")


def _rank(b: BuddyView) -> tuple[int, str]:
    return (1 if b.presence == "offline" else 0, b.display_name.lower())


def presence_rank(state: str) -> int:
    """0 for the most available state (online) … 3 for offline (unknown: offline)."""
    try:
        return PRESENCE_STATES.index(PresenceState(state))
    except ValueError:
        return len(PRESENCE_STATES) - 1


class Views:
    """Builds what the pages show from the agent (see the module docstring)."""

    def __init__(self, agent: AgentLink) -> None:
        self.agent = agent
        self._buddies: dict[str, tuple[str, list[BuddyView]]] = {}
        self._user: str | None = None

    async def snapshot(self) -> Snapshot:
        """``GET /state`` and, when someone is signed in, ``GET /links``."""
        state = await self.agent.call("GET", "/state")
        links: dict[str, dict[str, Any]] = {}
        if state.get("user") is not None:
            try:
                found = await self.agent.call("GET", "/links")
                links = {str(ln["target"]): ln for ln in found["links"]}
            except InterappError:
                links = {}  # signed out in between: no links to show
        if state.get("user") != self._user:  # another account: forget what was shown
            self._user = state.get("user")
            self._buddies.clear()
        return Snapshot(state, links)

    async def buddy_groups(self, snap: Snapshot) -> list[BuddyGroup]:
        """One buddy list across the targets, grouped by target (also while reconnecting)."""
        rows = sorted(snap.rows().items())
        live = [name for name, row in rows if row["state"] == "connected"]
        answers = await asyncio.gather(  # one call per connected target, side by side
            *(self.agent.call("GET", "/buddies", params={"target": n}) for n in live),
            return_exceptions=True)
        fetched = dict(zip(live, answers, strict=True))
        groups = []
        for name, row in rows:
            state, account = str(row["state"]), row.get("account")
            found = fetched.get(name)
            if isinstance(found, dict):
                self._buddies[name] = (str(account or ""), sorted(
                    (BuddyView(name, str(b["username"]), str(b["display_name"]),
                               str(b["presence"]), str(b["status_text"]),
                               str(b.get("activity_text") or ""))
                     for b in found["buddies"]), key=_rank))
            elif isinstance(found, BaseException) and not isinstance(found, InterappError):
                raise found
            elif state == "connected":
                pass  # it dropped just now: what was shown stays, marked reconnecting
            elif state not in RECONNECTING or name not in self._buddies:
                self._buddies.pop(name, None)
                if account is None:
                    continue
            shown, buddies = self._buddies.get(name, (str(account or ""), []))
            groups.append(BuddyGroup(name, str(row["plugin"]), str(account or shown),
                                     connected=state == "connected", buddies=list(buddies)))
        for name in set(self._buddies) - set(snap.rows()):
            self._buddies.pop(name, None)
        return groups

    async def buddy_list(self, snap: Snapshot) -> tuple[list[PersonView], list[BuddyGroup]]:
        """The buddy list as shown: one row per merged person (``GET /people``, kept by the
        agent locally; the presence of each account from the target groups), then the
        groups with the buddies that are not merged with anyone."""
        groups = await self.buddy_groups(snap)
        people = await self.people(snap)
        merged = {(a.target, a.user) for p in people for a in p.accounts}
        for g in groups:
            g.buddies = [b for b in g.buddies if (g.target, b.username) not in merged]
        return people, groups

    async def people(self, snap: Snapshot) -> list[PersonView]:
        """The merged persons with the best presence across their accounts (the most
        available; ties: the account merged first), best first."""
        if snap.state.get("user") is None:
            return []
        try:
            found = await self.agent.call("GET", "/people", params={"suggest": "false"})
        except InterappError:
            return []  # signed out in between, or an agent without persons
        listed = {(g, b.username): b for g, (_, bs) in self._buddies.items() for b in bs}
        out = []
        for p in found.get("people", []):
            accounts = []
            for a in p.get("accounts", []):
                target, user = str(a["target"]), str(a["user"])
                b = listed.get((target, user))
                accounts.append(PersonAccountView(
                    target, user, b.display_name if b else user,
                    b.presence if b else "offline", b.status_text if b else "",
                    b.activity_text if b else "", listed=b is not None))
            if not accounts:
                continue
            best = min(accounts, key=lambda x: presence_rank(x.presence))
            out.append(PersonView(str(p["id"]), str(p["name"]), best.presence,
                                  best.status_text, best.target, best.user, accounts))
        return sorted(out, key=lambda v: (presence_rank(v.presence), v.name.casefold()))

    async def invites(self, snap: Snapshot) -> list[InviteView]:
        """The open invites buddies sent (``GET /invites?target=`` of each connected
        target), newest first; none when nobody is signed in. A join link the UI would not
        open is left out."""
        if snap.state.get("user") is None:
            return []
        found: list[dict[str, Any]] = []
        for name, row in sorted(snap.rows().items()):
            if row["state"] != "connected":
                continue  # asking across every target would try to connect the others
            try:
                answer = await self.agent.call("GET", "/invites", params={"target": name})
                found += answer.get("invites", [])
            except InterappError:
                continue
        names = {(g, b.username): b.display_name for g, (_, bs) in self._buddies.items()
                 for b in bs}
        out = []
        for i in found:
            if i.get("outgoing") or i.get("state") != "pending" or not i.get("url"):
                continue
            try:
                url = check_join_url(i["url"])
                activity = activity_from_json(i.get("activity"), strict=False)
                what = render_activity(activity) if activity is not None else ""
            except (InterappError, ValueError, TypeError):
                continue
            sender = str(i["from"])
            out.append(InviteView(str(i["target"]), str(i["id"]), sender,
                                  names.get((str(i["target"]), sender), sender), what,
                                  str(i.get("message") or ""), url, str(i["expires_at"])))
        return sorted(out, key=lambda v: v.expires_at, reverse=True)
