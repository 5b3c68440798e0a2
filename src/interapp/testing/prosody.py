"""A real Prosody XMPP server on 127.0.0.1, for tests and the demo.

Theory of operation: :class:`ProsodyServer` writes a Prosody configuration into its own folder
(data, certificates, log and pid file all live there), picks a free port on 127.0.0.1 and runs
``prosody -F`` in the foreground as a child process in a new session. It is ready when the port
answers; it is stopped by its PID (SIGTERM, then SIGKILL after a grace period) and reaped with
``wait()``, so no zombie or stray server is left behind. :meth:`ProsodyServer.restart` stops and
starts it again on the same port and data. Accounts are made with ``prosodyctl register``, which
works whether or not the server runs.

The configuration follows ``peers.md``: no s2s, HTTP, BOSH or websockets, only loopback, the
modules an IM client needs (roster, presence, offline messages, MAM, vCard, carbons, in-band
registration), ``internal_hashed`` authentication (SCRAM-SHA-1). ``tls=True`` makes a self-signed
certificate for the domain with ``openssl`` and requires STARTTLS; ``plain_domain`` adds a second
virtual host that offers only SASL PLAIN (no SCRAM), for clients' fallback paths.

Prosody missing is an error, never a skip: :class:`ProsodyNotInstalled` says how to install it.
Never run ``prosody --version``: it starts a server with the system configuration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = ("install it with: apt-get update && DEBIAN_FRONTEND=noninteractive "
                "apt-get install -y --no-install-recommends prosody lua-unbound")

_MODULES = ("roster", "saslauth", "disco", "presence", "message", "private", "vcard4",
            "vcard_legacy", "pep", "ping", "version", "register", "offline", "carbons", "mam",
            "blocklist")


class ProsodyNotInstalled(RuntimeError):
    """``prosody``/``prosodyctl`` are not on this machine."""


def find_prosody() -> tuple[str, str]:
    """Paths of ``prosody`` and ``prosodyctl``; :class:`ProsodyNotInstalled` when missing."""
    found = []
    for name in ("prosody", "prosodyctl"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}",
                                                                        os.X_OK) else None)
        if path is None:
            raise ProsodyNotInstalled(f"Prosody (XMPP server) is not installed: {name} was not "
                                      f"found; {INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _lua(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ProsodyServer:
    """One Prosody process with its own folder (see the module docstring)."""

    def __init__(self, folder: Path, *, domain: str = "localhost", port: int | None = None,
                 tls: bool = False, plain_domain: str | None = None,
                 start_timeout: float = 20.0) -> None:
        self.prosody, self.prosodyctl = find_prosody()
        self.folder = Path(folder)
        self.domain = domain
        self.plain_domain = plain_domain
        self.tls = tls
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.start_timeout = start_timeout
        self.config_path = self.folder / "prosody.cfg.lua"
        self.log_path = self.folder / "prosody.log"
        self.cert_path = self.folder / "certs" / f"{domain}.crt"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config()

    # --- configuration ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server URL the ``xmpp`` plug-in takes: ``xmpp://127.0.0.1:PORT``."""
        return f"xmpp://{self.host}:{self.port}"

    def _write_config(self) -> None:
        d = self.folder
        for sub in ("data", "certs"):
            (d / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        modules = list(_MODULES) + (["tls"] if self.tls else [])
        disabled = ["s2s", "http", "bosh", "websocket", "admin_shell"]
        if not self.tls:
            disabled.append("tls")
        lines = [
            "run_as_root = true",
            f"pidfile = {_lua(str(d / 'prosody.pid'))}",
            f"data_path = {_lua(str(d / 'data'))}",
            f"certificates = {_lua(str(d / 'certs'))}",
            'interfaces = { "127.0.0.1" }',
            'c2s_interfaces = { "127.0.0.1" }',
            'local_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.port} }}",
            "c2s_direct_tls_ports = {}",
            "s2s_ports = {}",
            "http_ports = {}",
            "https_ports = {}",
            "modules_enabled = { " + "; ".join(_lua(m) for m in modules) + " }",
            "modules_disabled = { " + "; ".join(_lua(m) for m in disabled) + " }",
            f"c2s_require_encryption = {'true' if self.tls else 'false'}",
            "allow_registration = true",
            'authentication = "internal_hashed"',
            'archive_expires_after = "never"',
            "log = { { levels = { min = \"info\" }, to = \"file\", "
            f"filename = {_lua(str(self.log_path))} }} }}",
            f"VirtualHost {_lua(self.domain)}",
        ]
        if self.tls:
            self._make_certificate()
            key = self.folder / "certs" / f"{self.domain}.key"
            lines.append(f"  ssl = {{ certificate = {_lua(str(self.cert_path))}; "
                         f"key = {_lua(str(key))} }}")
        if self.plain_domain:
            scram = ", ".join(_lua(m) for m in ("DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS",
                                                "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"))
            lines += [f"VirtualHost {_lua(self.plain_domain)}",
                      f"  disable_sasl_mechanisms = {{ {scram} }}",
                      "  allow_unencrypted_plain_auth = true"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _make_certificate(self) -> None:
        if self.cert_path.exists():
            return
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ProsodyNotInstalled("openssl is needed to make the TLS test certificate")
        key = self.folder / "certs" / f"{self.domain}.key"
        argv = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN={self.domain}", "-addext", f"subjectAltName=DNS:{self.domain}",
                "-keyout", str(key), "-out", str(self.cert_path)]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)  # noqa: S603

    # --- accounts -----------------------------------------------------------------------------

    def _ctl(self, *args: str) -> None:
        argv = [self.prosodyctl, "--config", str(self.config_path), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60,  # noqa: S603
                              check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl {args[0]} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-400:]}")

    def register(self, user: str, password: str, domain: str | None = None) -> str:
        """Create (or overwrite the password of) ``user``; returns the bare JID."""
        host = domain or self.domain
        self._ctl("register", user, host, password)
        return f"{user}@{host}"

    def set_password(self, jid: str, password: str) -> None:
        """Change ``jid``'s password (new salt, so stored SCRAM keys stop working)."""
        user, _, host = jid.partition("@")
        self._ctl("register", user, host, password)

    # --- process ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running server's PID."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ProsodyServer:
        """Start in the foreground (child process); returns once the port answers."""
        if self.running:
            return self
        log = open(self.folder / "prosody.stderr", "ab")  # noqa: SIM115 - child keeps it
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
                [self.prosody, "-F", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                cwd=self.folder)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"prosody exited with {code} at start; see "
                                   f"{self.folder / 'prosody.stderr'} and {self.log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"prosody did not listen on {self.host}:{self.port} within "
                           f"{self.start_timeout:.0f} s; see {self.log_path}")

    def stop(self, grace: float = 10.0) -> None:
        """Stop the server by its PID (SIGTERM, then SIGKILL) and reap it. Data stays."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        else:
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port, keeping accounts, rosters and archives."""
        self.stop()
        self.start()

    def __enter__(self) -> ProsodyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["INSTALL_HINT", "ProsodyNotInstalled", "ProsodyServer", "find_prosody"]
