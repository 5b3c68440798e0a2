"""Entry point of the ``interapp`` command.

Every command has ``--help``; failures print exactly one line on stderr
(``interapp: error: …``) and exit non-zero: 2 for usage errors, 1 for everything else.
"""

from __future__ import annotations

import sys

import typer
from typer.main import get_command

try:  # typer >= 0.29 vendors click under typer._click; older typer uses click itself
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover
    from click import exceptions as cx  # type: ignore[no-redef]

from interapp import __version__
from interapp.errors import InterappError

app = typer.Typer(name="interapp", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="interapp: log in to other applications from this one and bring their "
                       "buddies, presence and messages here.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"interapp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
          no_agent: bool = typer.Option(False, "--no-agent",
                                        help="Run in this process even when an agent runs "
                                             "for the data folder.")) -> None:
    """interapp: across-application network communication."""
    if no_agent:
        from interapp.cli.common import IN_PROCESS

        IN_PROCESS["forced"] = True


#: Commands that only run the application server: the host's commands (and the vault,
#: cryptography and httpx under them, ~10 MB) are not even imported for these.
SERVER_ONLY = frozenset({"serve"})


def _register(argv: list[str]) -> None:
    from interapp.cli import server_cmds

    server_cmds.register(app)
    if argv[:1] and argv[0] in SERVER_ONLY:
        return
    try:
        from interapp.cli import host_cmds
    except ImportError:  # the host part is optional while it is being built
        return
    host_cmds.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every error into one line on stderr and an exit code."""
    args = argv if argv is not None else sys.argv[1:]
    _register(args)
    command = get_command(app)
    try:
        rv = command.main(args=args, prog_name="interapp",
                          standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("interapp: aborted\n")
        sys.exit(130)
    except cx.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: show its help
            sys.stderr.write(exc.format_message() + "\n")
            sys.exit(2)
        hint = f" (try '{exc.ctx.command_path} --help')" if exc.ctx else ""
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"interapp: error: {message}{hint}\n")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except cx.ClickException as exc:
        sys.stderr.write(f"interapp: error: {exc.format_message()}\n")
        sys.exit(exc.exit_code)
    except InterappError as exc:
        from interapp.cli.hints import render

        sys.stderr.write(f"interapp: error: {render(exc)}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interapp: interrupted\n")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
