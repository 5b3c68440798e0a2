"""Generic fixtures of the host suite: the real ``interapp`` command as a subprocess.

Nothing here mocks anything. :class:`ServerProcess` runs ``interapp serve --port 0`` in its own
process and reads the URL from the line the server prints; :class:`Cli` runs any ``interapp``
command in a fresh process with a chosen environment, standard input that is never a terminal,
and a time limit, and keeps a transcript of everything the commands printed (so a test can check
that no secret ever appeared in the output).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SERVING = re.compile(r"^interapp: serving (\S+) on (http://\S+) \(issuer (\S+)\)$")


def interapp_executable() -> Path:
    """The ``interapp`` script next to the running interpreter (the project's venv)."""
    exe = Path(sys.executable).with_name("interapp")
    if not exe.exists():
        found = shutil.which("interapp")
        if found is None:
            raise RuntimeError(f"no interapp command next to {sys.executable} or on PATH")
        exe = Path(found)
    return exe


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any INTERAPP_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERAPP_")}
    env.update(extra)
    return env


def new_vault_key() -> str:
    """A raw vault master key as ``INTERAPP_VAULT_KEY`` takes it: base64 of 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class CliResult:
    """One finished command."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def describe(self) -> str:
        return (f"interapp {' '.join(self.args)} → exit {self.returncode} in "
                f"{self.seconds:.2f} s\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}")


@dataclass
class Cli:
    """Runs ``interapp`` commands as subprocesses with one environment."""

    env: dict[str, str]
    exe: Path = field(default_factory=interapp_executable)
    transcript: list[CliResult] = field(default_factory=list)

    def run(self, *args: str, input: str | None = None, timeout: float = 60,
            env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CliResult:
        """Run ``interapp ARGS``; standard input is ``input`` (or empty), never a terminal."""
        t0 = time.perf_counter()
        proc = subprocess.run([str(self.exe), *args], input=input if input is not None else "",
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(env if env is not None else self.env), cwd=cwd)
        result = CliResult(tuple(args), proc.returncode, proc.stdout, proc.stderr,
                           time.perf_counter() - t0)
        self.transcript.append(result)
        return result

    def ok(self, *args: str, **kwargs: Any) -> CliResult:
        """Like :meth:`run`, asserting exit status 0."""
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, result.describe()
        return result

    def fails(self, *args: str, **kwargs: Any) -> CliResult:
        """Like :meth:`run`, asserting a non-zero exit and exactly one line on stderr."""
        result = self.run(*args, **kwargs)
        assert result.returncode != 0, result.describe()
        assert len(result.stderr_lines) == 1, result.describe()
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start ``interapp ARGS`` in the background (standard input closed)."""
        return subprocess.Popen([str(self.exe), *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(self.env))


class ServerProcess:
    """``interapp serve --app APP --port 0 --db DB_URL`` in its own process."""

    def __init__(self, app: str, db_url: str, *, env: Mapping[str, str], log: Path,
                 exe: Path | None = None) -> None:
        self.app = app
        self.db_url = db_url
        self.log = log
        self._log_fh = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(exe or interapp_executable()), "serve", "--app", app, "--port", "0",
             "--db", db_url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self._log_fh, text=True, env=dict(env))
        self.url = ""
        self.issuer = ""

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        """Read the ``interapp: serving …`` line; fail with the server's log if it never comes."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buffer = ""
        while "\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"interapp serve --app {self.app} did not announce itself "
                                   f"(exit {self.proc.returncode}); output {buffer!r}; log:\n"
                                   f"{self.log.read_text()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096).decode()
                if not chunk:
                    continue
                buffer += chunk
        line = buffer.splitlines()[0].strip()
        match = SERVING.match(line)
        if match is None or match.group(1) != self.app:
            self.stop()
            raise RuntimeError(f"unexpected announcement from interapp serve: {line!r}")
        self.url, self.issuer = match.group(2), match.group(3)
        # keep draining stdout so that the server can never block on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        stream = self.proc.stdout
        if stream is None:
            return
        try:
            while os.read(stream.fileno(), 4096):
                pass
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        """terminate() then wait(); kill only if it does not stop within 10 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log_fh.close()


@pytest.fixture(scope="session")
def interapp_exe() -> Path:
    """Path of the ``interapp`` command under test."""
    return interapp_executable()


def start_servers(running: dict[str, ServerProcess], folder: Path, *apps: str,
                  exe: Path | None = None) -> dict[str, ServerProcess]:
    """Start ``apps`` concurrently (each on ``folder/APP.db``) and wait until all announce."""
    env = clean_env(INTERAPP_HOME=str(folder / "server-home"))
    started = []
    for app in apps:
        srv = ServerProcess(app, f"sqlite:///{folder / app}.db", env=env,
                            log=folder / f"{app}.log", exe=exe)
        running[app] = srv
        started.append(srv)
    for srv in started:
        srv.wait_ready()
    return running


@pytest.fixture(scope="module")
def server_starter(interapp_exe: Path) -> Iterator[Callable[..., dict[str, ServerProcess]]]:
    """``start(folder, *apps)``: real ``interapp serve`` processes, stopped at module end.

    Each app serves ``sqlite:///FOLDER/APP.db``; the returned dict maps app name → running
    :class:`ServerProcess` (url, issuer, db_url).
    """
    running: dict[str, ServerProcess] = {}

    def start(folder: Path, *apps: str) -> dict[str, ServerProcess]:
        return start_servers(running, folder, *apps, exe=interapp_exe)

    yield start
    for srv in running.values():
        srv.stop()


@pytest.fixture(scope="session")
def host_env_factory() -> Callable[..., dict[str, str]]:
    """``make(home, **extra)``: a clean environment for a host on data folder ``home``.

    ``INTERAPP_HOME`` is ``home`` and ``INTERAPP_VAULT_KEY`` a fresh random raw key, so no
    command ever asks for a passphrase.
    """

    def make(home: Path, **extra: str) -> dict[str, str]:
        return clean_env(INTERAPP_HOME=str(home), INTERAPP_VAULT_KEY=new_vault_key(), **extra)

    return make


@pytest.fixture(scope="session")
def cli_factory(interapp_exe: Path) -> Callable[[dict[str, str]], Cli]:
    """``make(env)``: a :class:`Cli` running ``interapp`` subprocesses with ``env``."""

    def make(env: dict[str, str]) -> Cli:
        return Cli(env=env, exe=interapp_exe)

    return make
