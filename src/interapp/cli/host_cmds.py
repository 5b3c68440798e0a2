"""The local application's commands: local app, login, targets, plug-ins, connect, links."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from interapp.cli.common import (
    NoInputOpt,
    PasswordStdinOpt,
    UsernameOpt,
    make_prompter,
    run_host,
)
from interapp.cli.output import JSON_OPTION, ask_password, emit, read_secret_line
from interapp.errors import ConfigError, LinkError, VaultTampered
from interapp.host.config import LocalApp, Target, check_server_url, check_target_name
from interapp.host.runtime import Host, target_secret_name
from interapp.secret import Secret

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
    url = check_server_url(server)
    secret = Secret(read_secret_line("client-secret")) if client_secret_stdin else None

    async def work(host: Host) -> dict[str, Any]:
        from interapp.plugins.interapp_server.api import ServerClient

        client = ServerClient(url, client_id=client_id, client_secret=secret)
        try:
            issuer = str((await client.metadata())["issuer"])
        finally:
            await client.aclose()
        host.set_local(LocalApp(server=url, client_id=client_id, issuer=issuer), secret)
        return {"server": url, "issuer": issuer, "client_id": client_id}

    info = run_host(work)
    emit(info, f"local application: {url} (issuer {info['issuer']}), client {client_id}",
         as_json=as_json)


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
        current = host.config.local()
        me = await host.login(username, password)
        return {"issuer": current.issuer, "username": me["username"],
                "display_name": me["display_name"]}

    info = run_host(work)
    emit(info, f"logged in to {info['issuer']} as {info['username']} ({info['display_name']})",
         as_json=as_json)


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
    check_target_name(name)
    options: dict[str, str] = {}
    for item in option or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option {item!r}: use KEY=VALUE")
        options[key.strip()] = value
    if account_system not in ("shared", "separate"):
        raise ConfigError("--account-system must be shared or separate")
    secret = Secret(read_secret_line("client-secret")) if client_secret_stdin else None

    async def work(host: Host) -> dict[str, Any]:
        spec = host.registry.get(plugin)
        url = check_server_url(server, spec.url_schemes)
        targets = host.config.targets()
        kept = dict(targets[name].options) if name in targets else {}
        targets[name] = Target(name, plugin, url, client_id,
                               "shared" if account_system == "shared" else "separate", tls,
                               {**kept, **options})
        host.config.save_targets(targets)
        if secret is not None:
            host.vault.put_secret(target_secret_name(name), secret)
        return {"name": name, "plugin": plugin, "server": url, "client_id": client_id,
                "account_system": account_system, "options": options}

    info = run_host(work)
    emit(info, f"target {name}: {plugin} at {info['server']} ({account_system} account system)",
         as_json=as_json)


@targets_app.command("list")
def targets_list(as_json: JsonOpt = False) -> None:
    """List the configured targets."""

    async def work(host: Host) -> list[dict[str, Any]]:
        return [{"name": t.name, "plugin": t.plugin, "server": t.server,
                 "client_id": t.client_id, "account_system": t.account_system}
                for t in host.config.targets().values()]

    rows = run_host(work)
    lines = [f"{r['name']}\t{r['plugin']}\t{r['server']}\t{r['account_system']}" for r in rows]
    emit({"targets": rows}, "\n".join(lines) or "no targets configured", as_json=as_json)


@targets_app.command("remove")
def targets_remove(name: Annotated[str, typer.Argument(help="The target to remove.")],
                   as_json: JsonOpt = False) -> None:
    """Remove a target from the configuration (its link, if any, stays until unlinked)."""

    async def work(host: Host) -> None:
        targets = host.config.targets()
        host.config.target(name)
        del targets[name]
        host.config.save_targets(targets)
        host.vault.delete_secret(target_secret_name(name))

    run_host(work)
    emit({"removed": name}, f"target {name} removed", as_json=as_json)


def plugins(as_json: JsonOpt = False) -> None:
    """List the installed plug-ins with their versions and capabilities."""
    from interapp.host.registry import discover

    registry = discover()
    rows = [{"name": s.name, "version": s.version, "description": s.description,
             "capabilities": s.capabilities()} for s in registry.specs.values()]
    broken = [{"name": n, "problem": p} for n, p in registry.problems.items()]
    lines = [f"{r['name']} {r['version']}: {r['description']}" for r in rows]
    lines += [f"{b['name']}: BROKEN ({b['problem']})" for b in broken]
    emit({"plugins": rows, "broken": broken}, "\n".join(lines), as_json=as_json)


def connect(name: Annotated[str, typer.Argument(help="The target to connect.")],
            username: UsernameOpt = None, password_stdin: PasswordStdinOpt = False,
            no_input: NoInputOpt = False,
            explain: Annotated[bool, typer.Option(
                "--explain", help="Print which branch of the flow was taken and why.")] = False,
            as_json: JsonOpt = False) -> None:
    """Connect a target: same-account login, stored link, or prompt (claim 1)."""
    prompter = make_prompter(no_input=no_input, username=username,
                             password_stdin=password_stdin)

    async def work(host: Host) -> dict[str, Any]:
        outcome = await host.connect(name, prompter)
        if explain:
            sys.stderr.write(outcome.trace + "\n")
        if outcome.failure is not None:
            raise outcome.failure
        assert outcome.connection is not None
        c = outcome.connection
        return {"target": name, "branch": str(c.branch), "remote_account": c.profile.username,
                "link_state": str(c.link.state) if c.link else None, "trace": outcome.trace}

    info = run_host(work)
    emit(info, f"connected to {name} as {info['remote_account']} ({info['branch']})",
         as_json=as_json)


def links(as_json: JsonOpt = False,
          verify_audit: Annotated[bool, typer.Option(
              "--verify-audit", help="Check the audit log's hash chain.")] = False) -> None:
    """Each target's link: remote account, state, last use."""

    async def work(host: Host) -> dict[str, Any]:
        local = host.config.local()
        rows = []
        linked = {str(ln.target): ln
                  for ln in host.vault.list_links(local.issuer, local.username)}
        for name in sorted(set(host.config.targets()) | set(linked)):
            ln = linked.get(name)
            rows.append({"target": name, "remote_account": ln.remote_account_name if ln else None,
                         "state": str(ln.state) if ln else "not linked",
                         "reason": ln.state_reason if ln else "",
                         "last_used": ln.last_used_at.isoformat() if ln and ln.last_used_at
                         else None})
        out: dict[str, Any] = {"links": rows}
        if verify_audit:
            report = host.vault.verify_audit()
            out["audit"] = {"ok": report.ok, "entries": report.entries,
                            "first_bad_seq": report.first_bad_seq, "reason": report.reason}
        return out

    data = run_host(work)
    lines = [f"{r['target']}\t{r['remote_account'] or '-'}\t{r['state']}"
             f"{' (' + r['reason'] + ')' if r['reason'] else ''}\t{r['last_used'] or '-'}"
             for r in data["links"]]
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

    async def work(host: Host) -> tuple[bool | None, str]:
        return await host.unlink(name)

    revoked, note = run_host(work)
    result = {"target": name, "remote_revoked": revoked, "local_credential_destroyed": True,
              "note": note}
    if revoked is False:  # the remote grant may still be alive: a failure, on stderr
        if as_json:
            emit(result, "", as_json=True)
        raise LinkError(f"unlinked {name} here, but {note}")
    emit(result, f"unlinked {name}: {note}; local credential destroyed", as_json=as_json)


def register(root: typer.Typer) -> None:
    """Attach the host's commands to the root command."""
    from interapp.cli import chat_cmds, demo, ui_cmd

    root.command("local")(local)
    root.command("login")(login)
    root.add_typer(targets_app, name="targets")
    root.command("plugins")(plugins)
    root.command("connect")(connect)
    root.command("links")(links)
    root.command("unlink")(unlink)
    chat_cmds.register(root)
    demo.register(root)
    ui_cmd.register(root)
