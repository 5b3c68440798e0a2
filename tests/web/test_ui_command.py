"""``interapp ui``: options, and the refusal to listen beyond this computer unless told to."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from interapp.cli import ui_cmd
from interapp.errors import ConfigError
from interapp.web.server import has_display, is_loopback, url_host


def app() -> typer.Typer:
    root = typer.Typer(add_completion=False)

    @root.callback()
    def _root() -> None:
        pass

    ui_cmd.register(root)
    return root


def test_help_lists_the_options() -> None:
    result = CliRunner().invoke(app(), ["ui", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--no-browser", "--allow-remote"):
        assert option in result.output


def test_non_loopback_host_is_refused() -> None:
    result = CliRunner().invoke(app(), ["ui", "--host", "0.0.0.0", "--no-browser"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "--allow-remote" in str(result.exception)


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "example.com", "::"))
    assert url_host("::1") == "[::1]" and url_host("127.0.0.1") == "127.0.0.1"


def test_no_display_no_browser(monkeypatch: object) -> None:
    import sys

    if sys.platform.startswith("linux"):
        assert has_display({}) is False
        assert has_display({"DISPLAY": ":0"}) is True
        assert has_display({"WAYLAND_DISPLAY": "wayland-0"}) is True
