"""A real ejabberd XMPP server on 127.0.0.1, for tests: Debian's ``ejabberd`` (23.01).

Theory of operation: :class:`EjabberdServer` writes its own ``ejabberdctl.cfg`` and
``ejabberd.yml`` into a folder of its own (spool = the Mnesia database, logs and pid file live
there too), with an Erlang node name of its own (so it never meets another ejabberd, nor
RabbitMQ, which shares the machine's epmd — epmd is left alone). It runs
``ejabberdctl … foreground`` as a child process in a new session and is ready when both of its
loopback ports answer: the client port (``ejabberd_c2s``, no TLS, SCRAM-SHA-1 and PLAIN) and an
HTTP port serving ``mod_http_api``, which accepts admin commands from loopback only. Accounts
are made and passwords changed through that API (``register``, ``change_password``): a few
milliseconds each, where every ``ejabberdctl`` command would start an Erlang VM (~1 s).

Run as root, Debian's ``ejabberdctl`` runs the server as the ``ejabberd`` user, which cannot
enter pytest's private temporary folders; the server's folder is then a fresh folder of the
system temporary folder owned by ``ejabberd``, removed by :meth:`EjabberdServer.close`.
Stopping sends SIGTERM to the Erlang VM's PID (the pid file; a clean Mnesia shutdown, ~2-3 s),
SIGKILL after a grace period, and reaps the child; :meth:`EjabberdServer.restart` keeps port,
accounts, rosters, archives and offline messages.

ejabberd missing is an error, never a skip: :class:`EjabberdNotInstalled` says how to install
it (``make peers`` does). The pytest fixture :func:`ejabberd` (one server per test session) is
enabled in a test module with ``pytest_plugins = ["interapp.testing.ejabberd"]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from interapp.testing.servers import free_port

try:
    import pytest
except ImportError:  # pragma: no cover - the launcher also works without pytest
    _PYTEST = False
else:
    _PYTEST = True

INSTALL_HINT = ("install it with `make peers`, or: apt-get update && "
                "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
                "ejabberd")
SERVICE_USER = "ejabberd"  # Debian's ejabberdctl runs the server as this user when run as root

# The modules an IM client meets on a typical deployment (roster, vCard, offline storage with
# XEP-0013, MAM for everything, carbons, stream management, caps, disco, ping, last activity)
# plus mod_admin_extra for the change_password command.
_MODULES: dict[str, dict[str, Any]] = {
    "mod_roster": {}, "mod_vcard": {}, "mod_offline": {}, "mod_mam": {"default": "always"},
    "mod_carboncopy": {}, "mod_stream_mgmt": {}, "mod_caps": {}, "mod_disco": {},
    "mod_ping": {}, "mod_last": {}, "mod_admin_extra": {},
}


class EjabberdNotInstalled(RuntimeError):
    """``ejabberdctl`` is not on this machine (or cannot run the server as this user)."""


def find_ejabberdctl() -> str:
    """Path of ``ejabberdctl``; :class:`EjabberdNotInstalled` when missing."""
    path = shutil.which("ejabberdctl") or next(
        (p for p in ("/usr/sbin/ejabberdctl", "/usr/bin/ejabberdctl") if os.access(p, os.X_OK)),
        None)
    if path is None:
        raise EjabberdNotInstalled(f"ejabberd (XMPP server) is not installed: ejabberdctl was "
                                   f"not found; {INSTALL_HINT}")
    return path


class EjabberdServer:
    """One ejabberd node with its own folder (see the module docstring)."""

    def __init__(self, folder: Path, *, domain: str = "localhost", port: int | None = None,
                 start_timeout: float = 60.0) -> None:
        self.ejabberdctl = find_ejabberdctl()
        self.domain = domain
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.api_port = free_port()
        self.start_timeout = start_timeout
        self.node = f"interapp{secrets.token_hex(4)}@localhost"
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam(SERVICE_USER)
            except KeyError as exc:
                raise EjabberdNotInstalled(f"the {SERVICE_USER!r} user is missing; "
                                           f"{INSTALL_HINT}") from exc
            self._owner = (user.pw_uid, user.pw_gid)
            self.folder = Path(tempfile.mkdtemp(prefix="interapp-ejabberd-"))
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "ejabberd-folder.txt").write_text(f"{self.folder}\n")
        else:
            self.folder = Path(folder)
        self.log_path = self.folder / "logs" / "ejabberd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # --- configuration ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server URL the ``xmpp`` plug-in takes: ``xmpp://127.0.0.1:PORT``."""
        return f"xmpp://{self.host}:{self.port}"

    def _write_config(self) -> None:
        d = self.folder
        for sub in ("spool", "logs"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        ctl = {"ERLANG_NODE": self.node, "INET_DIST_INTERFACE": self.host,
               "EJABBERD_CONFIG_PATH": d / "ejabberd.yml", "SPOOL_DIR": d / "spool",
               "LOGS_DIR": d / "logs", "EJABBERD_PID_PATH": d / "ejabberd.pid",
               "EJABBERD_BYPASS_WARNINGS": "true",
               "ERL_OPTIONS": "-env ERL_CRASH_DUMP_BYTES 0"}
        (d / "ejabberdctl.cfg").write_text(
            "".join(f"{k}={json.dumps(str(v))}\n" for k, v in ctl.items()))
        # names resolve from this file only: no DNS
        (d / "inetrc").write_text('{lookup,["file","native"]}.\n'
                                  '{host,{127,0,0,1}, ["localhost"]}.\n')
        # JSON is YAML: no YAML writer needed
        config = {
            "hosts": [self.domain],
            "loglevel": "info",
            "log_rotate_count": 0,
            "listen": [
                {"port": self.port, "ip": self.host, "module": "ejabberd_c2s",
                 "starttls": False, "max_stanza_size": 262144},
                {"port": self.api_port, "ip": self.host, "module": "ejabberd_http",
                 "request_handlers": {"/api": "mod_http_api"}},
            ],
            "auth_method": "internal",
            "auth_password_format": "scram",
            "s2s_access": "none",
            "acl": {"loopback": {"ip": ["127.0.0.0/8"]}},
            "api_permissions": {"loopback admin": {
                "from": ["ejabberd_ctl", "mod_http_api"], "who": {"acl": "loopback"},
                "what": "*"}},
            "modules": _MODULES,
        }
        (d / "ejabberd.yml").write_text(json.dumps(config, indent=1) + "\n")
        self._chown()

    def _chown(self) -> None:
        if self._owner is None:
            return
        uid, gid = self._owner
        os.chown(self.folder, uid, gid)  # mkdtemp made it 0700: now the service user's
        for path in self.folder.rglob("*"):
            os.chown(path, uid, gid, follow_symlinks=False)

    # --- admin commands (mod_http_api, loopback only) -----------------------------------------

    def api(self, command: str, **args: Any) -> Any:
        """Run an admin command through ``mod_http_api``; its JSON answer."""
        request = urllib.request.Request(
            f"http://{self.host}:{self.api_port}/api/{command}",
            data=json.dumps(args).encode(), headers={"Content-Type": "application/json"},
            method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RuntimeError(f"ejabberd API {command} failed: HTTP {exc.code} {detail}") \
                from None

    def register(self, user: str, password: str) -> str:
        """Create ``user``; returns the bare JID."""
        self.api("register", user=user, host=self.domain, password=password)
        return f"{user}@{self.domain}"

    def set_password(self, jid: str, password: str) -> None:
        """Change ``jid``'s password (new salt, so stored SCRAM keys stop working)."""
        user, _, host = jid.partition("@")
        self.api("change_password", user=user, host=host or self.domain, newpass=password)

    def offline_count(self, jid: str) -> int:
        """How many messages wait in ``jid``'s offline store."""
        user, _, host = jid.partition("@")
        answer = self.api("get_offline_count", user=user, server=host or self.domain)
        return int(answer["value"] if isinstance(answer, dict) else answer)

    # --- process ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The Erlang VM's PID while it runs (from its pid file)."""
        try:
            return int((self.folder / "ejabberd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _ctl_argv(self, *args: str) -> list[str]:
        d = str(self.folder)
        return [self.ejabberdctl, "--config-dir", d, "--spool", f"{d}/spool",
                "--logs", f"{d}/logs", *args]

    def start(self) -> EjabberdServer:
        """Start in the foreground (child process); returns once both ports answer."""
        if self.running:
            return self
        with contextlib.suppress(FileNotFoundError):
            (self.folder / "ejabberd.pid").unlink()
        log = open(self.folder / "ejabberd.stderr", "ab")  # noqa: SIM115 - child keeps it
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                self._ctl_argv("foreground"), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, cwd=self.folder)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        waiting = [self.port, self.api_port]
        while waiting:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise RuntimeError(f"ejabberd exited with {code} at start; see "
                                   f"{self.folder / 'ejabberd.stderr'} and {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"ejabberd did not listen on {self.host}:{waiting[0]} "
                                   f"within {self.start_timeout:.0f} s; see {self.log_path}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.5):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.05)
        return self

    def stop(self, grace: float = 15.0) -> None:
        """Stop the node (SIGTERM to the Erlang VM, then SIGKILL) and reap it. Data stays."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        beam = self.pid
        if proc.poll() is None:
            if beam is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(beam, signal.SIGTERM)
            else:  # not up far enough to write its pid file
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                for pid in (beam, proc.pid):
                    if pid is not None:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                proc.wait(10)
        else:
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same ports, keeping all data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and remove the server's own folder when it made one (run as root)."""
        self.stop()
        if self._owner is not None:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> EjabberdServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# --- pytest ------------------------------------------------------------------------------------

if _PYTEST:
    @pytest.fixture(scope="session")
    def ejabberd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EjabberdServer]:
        """One ejabberd per test session (fresh accounts per test). Fails, never skips, when
        ejabberd is not installed."""
        try:
            server = EjabberdServer(tmp_path_factory.mktemp("ejabberd"))
        except EjabberdNotInstalled as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            server.start()
            yield server
        finally:
            server.close()


__all__ = ["INSTALL_HINT", "EjabberdNotInstalled", "EjabberdServer", "find_ejabberdctl"]
if _PYTEST:
    __all__ += ["ejabberd"]
