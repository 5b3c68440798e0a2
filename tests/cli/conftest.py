"""Fixtures of the command-line tests: run the real ``interapp`` executable in a subprocess."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# The server suite's helpers (a real server in a thread, `interapp serve` processes).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

INTERAPP = str(Path(sys.executable).with_name("interapp"))

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The data folder (``INTERAPP_HOME``) of the commands run by ``cli``."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli(home: Path) -> Cli:
    """``cli("admin", "add-user", …, input="pw\\n")`` runs ``interapp`` with INTERAPP_HOME=home."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "INTERAPP_HOME": str(home)}
        return subprocess.run([INTERAPP, *args], input=input if input is not None else "",
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    return run


@pytest.fixture
def cli_many(cli: Cli) -> Callable[[list[list[str]]], list[subprocess.CompletedProcess[str]]]:
    """Runs independent ``interapp`` invocations side by side (start-up time dominates)."""

    def run_all(calls: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: cli(*args), calls))

    return run_all


@pytest.fixture
def cli_inproc(home: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The same command line run in this process (``interapp.cli.main.main``): no start-up cost,
    for long matrices of error cases; a few of each are also run by ``cli`` as subprocesses."""
    from interapp.cli import main as entry

    monkeypatch.setenv("INTERAPP_HOME", str(home))
    # main() registers the sub-commands on the module's Typer app at each call: undo that.
    commands, groups = list(entry.app.registered_commands), list(entry.app.registered_groups)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stdin", io.StringIO(input or ""))
        code: int | str | None = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                entry.main(list(args))
            except SystemExit as exc:
                code = exc.code
            finally:
                entry.app.registered_commands[:] = commands
                entry.app.registered_groups[:] = groups
        assert isinstance(code, int), code
        return subprocess.CompletedProcess(["interapp", *args], code, out.getvalue(),
                                           err.getvalue())

    return run
