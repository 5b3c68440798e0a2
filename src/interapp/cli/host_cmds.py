"""The local application's commands: local app, login, targets, plug-ins, connect, links."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from interapp.cli.common import (
    NoInputOpt,
    PasswordStdinOpt,
    UsernameOpt,
    ViaOpt,
    make_prompter,
    run_host,
)
from interapp.cli.output import JSON_OPTION, ask_password, emit, read_secret_line
from interapp.host import (
    ConfigError,
    Host,
    InterappError,
    LinkError,
    LinkInfo,
    Secret,
    TargetInfo,
    VaultTampered,
    available_plugins,
)

JsonOpt = Annotated[bool, JSON_OPTION]
targets_app = typer.Typer(no_args_is_help=True, help="Configure the opposite applications "
                          "(targets.toml in the data folder; editable by hand).")


def local(server: Annotated[str, typer.Option("--server", help="The local app's URL.")],
          client_id: Annotated[str, typer.Option("--client-id", help="This host's client id "
                                                 "at the local app.")],
          client_secret_stdin: Annotated[bool, typer.Option(
              "--client-secret-stdin", help="Read the client secret from standard input.")
          ] = False,
          as_json: JsonOpt = False) -> None:
    """Choose which interapp server is the local application."""
    secret = Secret(read_secret_line("client-secret")) if client_secret_stdin else None

    async def work(host: Host) -> dict[str, Any]:
        info = await host.set_local(server, client_id=client_id, client_secret=secret)
        return {"server": info.server, "issuer": info.issuer, "client_id": info.client_id}

    info = run_host(work)
    emit(info, f"local application: {info['server']} (issuer {info['issuer']}), client "
               f"{client_id}", as_json=as_json)


def login(username: Annotated[str, typer.Argument(help="Your account at the local app.")],
          password_stdin: Annotated[bool, typer.Option(
              "--password-stdin", help="Read the password from standard input.")] = False,
          as_json: JsonOpt = False) -> None:
    """Log in to the local application."""
    if password_stdin:
        password = Secret(read_secret_line("password"))
    elif sys.stdin is not None and sys.stdin.isatty():
        password = Secret(ask_password(f"Password for {username}"))
    else:
        raise ConfigError("no terminal to ask for the password: use --password-stdin")

    async def work(host: Host) -> dict[str, Any]:
        me = await host.sign_in(username, password)
        return {"issuer": me.issuer, "username": me.username, "display_name": me.display_name}

    info = run_host(work)
    emit(info, f"logged in to {info['issuer']} as {info['username']} ({info['display_name']})",
         as_json=as_json)


def _server_warning(name: str, link: LinkInfo | None) -> str | None:
    if link is None or not link.server_changed:
        return None
    return (f"warning: {name}'s link to {link.remote_account} was made with {link.server}; "
            f"it will not be used (nor its credential sent) with the new server — "
            f"'interapp unlink {name}' and connect again, or set the server back")


@targets_app.command("add")
def targets_add(name: Annotated[str, typer.Argument(help="A name for the target.")],
                plugin: Annotated[str, typer.Option("--plugin", help="Plug-in to use.")],
                server: Annotated[str, typer.Option("--server", help="The target's URL.")],
                client_id: Annotated[str | None, typer.Option(
                    "--client-id", help="This host's client id at the target.")] = None,
                client_secret_stdin: Annotated[bool, typer.Option(
                    "--client-secret-stdin", help="Read the client secret from stdin.")
                ] = False,
                account_system: Annotated[str, typer.Option(
                    "--account-system", help="shared (trusts the local app's accounts) or "
                    "separate.")] = "separate",
                tls: Annotated[bool | None, typer.Option(
                    "--tls/--no-tls", help="Force TLS on or off (default: on off loopback).")
                ] = None,
                option: Annotated[list[str] | None, typer.Option(
                    "--option", help="A plug-in option KEY=VALUE (repeatable), e.g. "
                    "jwt_audience=https://…")] = None,
                as_json: JsonOpt = False) -> None:
    """Add (or replace) a target."""
    options: dict[str, str] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: use KEY=VALUE")
        options[key.strip()] = value
    if account_system not in ("shared", "separate"):
        raise ConfigError("--account-system must be shared or separate")
    secret = Secret(read_secret_line("client-secret")) if client_secret_stdin else None

    async def work(host: Host) -> tuple[TargetInfo, str | None]:
        info = await host.add_target(name, plugin=plugin, server=server, client_id=client_id,
                                     client_secret=secret, account_system=account_system,
                                     tls=tls, options=options)
        link = await host.link(name) if host.signed_in else None
        return info, _server_warning(name, link)

    info, warning = run_host(work)
    data = {"name": name, "plugin": plugin, "server": info.server, "client_id": client_id,
            "account_system": account_system, "options": options}
    if warning:
        data["warning"] = warning
        sys.stderr.write(warning + "\n")
    emit(data, f"target {name}: {plugin} at {info.server} ({account_system} account system)",
         as_json=as_json)


@targets_app.command("list")
def targets_list(as_json: JsonOpt = False) -> None:
    """List the configured targets."""

    async def work(host: Host) -> list[TargetInfo]:
        return host.targets()

    rows = [{"name": t.name, "plugin": t.plugin, "server": t.server, "client_id": t.client_id,
             "account_system": t.account_system} for t in run_host(work)]
    lines = [f"{r['name']}\t{r['plugin']}\t{r['server']}\t{r['account_system']}" for r in rows]
    emit({"targets": rows}, "\n".join(lines) or "no targets configured", as_json=as_json)


@targets_app.command("remove")
def targets_remove(name: Annotated[str, typer.Argument(help="The target to remove.")],
                   as_json: JsonOpt = False) -> None:
    """Remove a target from the configuration (its link, if any, stays until unlinked)."""

    async def work(host: Host) -> None:
        await host.remove_target(name)

    run_host(work)
    emit({"removed": name}, f"target {name} removed", as_json=as_json)


def plugins(as_json: JsonOpt = False) -> None:
    """List the installed plug-ins with their versions and capabilities."""
    found = available_plugins()
    rows = [{"name": p.name, "version": p.version, "description": p.description,
             "capabilities": p.capabilities} for p in found if not p.problem]
    broken = [{"name": p.name, "problem": p.problem} for p in found if p.problem]
    lines = [f"{r['name']} {r['version']}: {r['description']}" for r in rows]
    lines += [f"{b['name']}: BROKEN ({b['problem']})" for b in broken]
    emit({"plugins": rows, "broken": broken}, "\n".join(lines), as_json=as_json)


#: How the command line words the resolver's WayReason codes (``--explain``).
WAY_REASONS = {
    "requested": "you asked for it with --via",
    "remembered": "the link was made this way, so it is re-authenticated the same way",
    "headless": "there is no display to open a browser on, so a code to type on any device",
    "most_secure": "the most secure way offered (browser, then device, then password)",
    "only_way": "the only way the target and this command both offer",
}


def connect(name: Annotated[str, typer.Argument(help="The target to connect.")],
            username: UsernameOpt = None, password_stdin: PasswordStdinOpt = False,
            no_input: NoInputOpt = False, via: ViaOpt = None,
            explain: Annotated[bool, typer.Option(
                "--explain", help="Print which branch of the flow was taken, which way to "
                "sign in was chosen, and why.")] = False,
            as_json: JsonOpt = False) -> None:
    """Connect a target: same-account login, stored link, or a sign-in (claim 1) through the
    browser, a device code or the password."""
    if via is not None and via not in ("browser", "device", "password"):
        raise ConfigError(f"--via {via!r}: use browser, device or password")
    prompter = make_prompter(no_input=no_input, username=username,
                             password_stdin=password_stdin, via=via)

    async def work(host: Host) -> dict[str, Any]:
        try:
            c = await (host.connect(name, prompter, account=username, via=via) if via else
                       host.connect(name, prompter, account=username))
        except InterappError as exc:
            if explain and exc.explain:
                sys.stderr.write(exc.explain + "\n")
            raise
        if explain:
            sys.stderr.write(c.explain + "\n")
            if c.way:
                why = WAY_REASONS.get(c.way_reason or "", c.way_reason or "")
                sys.stderr.write(f"way: {c.way} ({c.way_reason}: {why})\n")
            else:
                sys.stderr.write("way: none (no sign-in was needed)\n")
        return {"target": name, "branch": str(c.branch), "remote_account": c.account,
                "link_state": str(c.link.state) if c.link else None, "trace": c.explain,
                "way": c.way, "way_reason": c.way_reason}

    info = run_host(work)
    emit(info, f"connected to {name} as {info['remote_account']} ({info['branch']})",
         as_json=as_json)


def _link_row(name: str, ln: LinkInfo | None) -> dict[str, Any]:
    if ln is None:
        return {"target": name, "remote_account": None, "state": "not linked", "reason": "",
                "last_used": None, "server": None, "server_changed": False}
    return {"target": name, "remote_account": ln.remote_account, "state": str(ln.state),
            "reason": ln.reason, "last_used": ln.last_used.isoformat() if ln.last_used else None,
            "server": ln.server, "server_changed": ln.server_changed}


def _link_line(r: dict[str, Any]) -> str:
    why = r["reason"]
    if r["server_changed"]:
        why = f"made with {r['server']}, the target now names another server: not used"
    return (f"{r['target']}\t{r['remote_account'] or '-'}\t{r['state']}"
            f"{' (' + why + ')' if why else ''}\t{r['last_used'] or '-'}")


def links(as_json: JsonOpt = False,
          verify_audit: Annotated[bool, typer.Option(
              "--verify-audit", help="Check the audit log's hash chain.")] = False) -> None:
    """Each target's link: remote account, state and why, last use."""

    async def work(host: Host) -> dict[str, Any]:
        linked = {ln.target: ln for ln in await host.links()}
        names = sorted({t.name for t in host.targets()} | set(linked))
        out: dict[str, Any] = {"links": [_link_row(n, linked.get(n)) for n in names]}
        if verify_audit:
            report = await host.verify_audit()
            out["audit"] = {"ok": report.ok, "entries": report.entries,
                            "first_bad_seq": report.first_bad_seq, "reason": report.reason}
        return out

    data = run_host(work)
    lines = [_link_line(r) for r in data["links"]]
    if "audit" in data:
        a = data["audit"]
        lines.append(f"audit chain: {'ok' if a['ok'] else 'BROKEN'} ({a['entries']} entries"
                     f"{'' if a['ok'] else ', first bad seq ' + str(a['first_bad_seq'])})")
    emit(data, "\n".join(lines) or "no targets", as_json=as_json)
    if "audit" in data and not data["audit"]["ok"]:
        raise VaultTampered(f"the audit chain is broken at entry "
                            f"{data['audit']['first_bad_seq']}: {data['audit']['reason']}")


def unlink(name: Annotated[str, typer.Argument(help="The target to unlink.")],
           as_json: JsonOpt = False) -> None:
    """Revoke the grant at the target, then destroy the local credential."""

    async def work(host: Host) -> Any:
        return await host.unlink(name)

    done = run_host(work)
    result = {"target": name, "remote_revoked": done.remote_revoked,
              "local_credential_destroyed": done.local_credential_destroyed, "note": done.note}
    if done.remote_revoked is False:  # the remote grant may still be alive: a failure
        if as_json:
            emit(result, "", as_json=True)
        raise LinkError(f"unlinked {name} here, but {done.note}")
    emit(result, f"unlinked {name}: {done.note}; local credential destroyed", as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach the host's commands to the root command."""
    from interapp.cli import agent_cmds, chat_cmds, demo, people_cmds, ui_cmd

    root.command("local")(local)
    root.command("login")(login)
    root.add_typer(targets_app, name="targets")
    root.command("plugins")(plugins)
    root.command("connect")(connect)
    root.command("links")(links)
    root.command("unlink")(unlink)
    chat_cmds.register(root)
    people_cmds.register(root)
    demo.register(root)
    ui_cmd.register(root)
    agent_cmds.register(root)
