"""A real Synapse homeserver for tests and demos: started on loopback, stopped by its PID.

Theory of operation
-------------------
Synapse lives in its *own* virtual environment (it pins Twisted and friends), by default
``.peers/synapse`` of the project (``make peers`` creates it with ``matrix-synapse[jwt]``), or the
one named by ``INTERAPP_SYNAPSE_VENV``. :class:`SynapseServer` writes a configuration into a
temporary folder (JSON, which is valid YAML), picks a free port on 127.0.0.1, starts
``python -m synapse.app.homeserver`` as a child process in its own session, and is ready when
``GET /_matrix/client/versions`` answers 200. It is stopped with ``terminate()`` + ``wait()`` on
that PID and can be restarted on the same port and data. Nothing leaves loopback: no federation
listener, no trusted key servers.

The configuration follows ``shared/notes/peers.md``: generous ``rc_*`` rate limits (else
Synapse's defaults make every client sleep on 429), presence on, and optionally a
``jwt_config`` (:class:`JwtTrust`) so that the homeserver accepts ``org.matrix.login.jwt``
logins signed by another application's key (the *same account system*).

Users are registered through the shared-secret admin API (HMAC-SHA1 over nonce, user,
password, admin flag), about 0.4 s each.

A missing Synapse is an error naming ``make peers``, never a skip.

The pytest fixture :func:`matrix_synapse` (one server per test session, trusting the
``interapp_home`` local application) is enabled in a test module with
``pytest_plugins = ["interapp.testing.synapse"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from interapp.testing.servers import free_port

try:
    import pytest
except ImportError:  # pragma: no cover - the launcher also serves the demo
    _PYTEST = False
else:
    _PYTEST = True

__all__ = [
    "SYNAPSE_VENV_ENV", "JwtTrust", "SynapseServer", "SynapseUnavailable", "find_synapse_python",
    "jwks_to_pem", "matrix_synapse", "trust_from_jwks",
]

#: Environment variable naming Synapse's virtual environment (default: ``.peers/synapse``).
SYNAPSE_VENV_ENV = "INTERAPP_SYNAPSE_VENV"
INSTALL_HINT = ("run `make peers` in the project (it installs 'matrix-synapse[jwt]' into "
                ".peers/synapse, about a minute), or point INTERAPP_SYNAPSE_VENV at a virtual "
                "environment that has it")

_GENEROUS = {"per_second": 1000, "burst_count": 1000}
#: Rate limits that never make a test client wait (Synapse's defaults do).
DEFAULT_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _GENEROUS,
    "rc_registration": _GENEROUS,
    "rc_room_creation": _GENEROUS,
    "rc_presence": {"per_user": _GENEROUS},
    "rc_login": {"address": _GENEROUS, "account": _GENEROUS, "failed_attempts": _GENEROUS},
    "rc_joins": {"local": _GENEROUS, "remote": _GENEROUS},
    "rc_invites": {"per_room": _GENEROUS, "per_user": _GENEROUS},
}


class SynapseUnavailable(RuntimeError):
    """Synapse is not installed (or not with the extras needed), or did not start."""


def _candidates() -> Iterator[Path]:
    env = os.environ.get(SYNAPSE_VENV_ENV)
    if env:
        yield Path(env)
        return
    seen: set[Path] = set()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            venv = folder / ".peers" / "synapse"
            if venv not in seen:
                seen.add(venv)
                yield venv


def find_synapse_python(*, need_jwt: bool = False) -> Path:
    """The Python of Synapse's virtual environment; SynapseUnavailable naming ``make peers``."""
    for venv in _candidates():
        python = venv / "bin" / "python"
        sites = list(venv.glob("lib/python3*/site-packages"))
        if not python.exists() or not any((s / "synapse").is_dir() for s in sites):
            continue
        if need_jwt and not any((s / "authlib").is_dir() for s in sites):
            raise SynapseUnavailable(f"Synapse in {venv} lacks its 'jwt' extra (Authlib), "
                                     f"needed for JWT login: {INSTALL_HINT}")
        return python
    where = os.environ.get(SYNAPSE_VENV_ENV) or ".peers/synapse"
    raise SynapseUnavailable(f"Synapse is not installed (looked for {where}): {INSTALL_HINT}")


@dataclass(frozen=True)
class JwtTrust:
    """``jwt_config``: the homeserver accepts JWTs from ``issuer`` signed with this key."""

    issuer: str
    public_key_pem: str
    #: accepted ``aud`` values; empty = the homeserver's own URL (``http://127.0.0.1:PORT``)
    audiences: tuple[str, ...] = ()
    algorithm: str = "ES256"
    subject_claim: str = "sub"
    display_name_claim: str | None = "name"


def jwks_to_pem(jwks: Mapping[str, Any], kid: str | None = None) -> str:
    """The PEM (SubjectPublicKeyInfo) of a JWKS's signing key (the one with ``kid``, if given)."""
    from joserfc.jwk import ECKey

    keys = [k for k in jwks.get("keys", []) if isinstance(k, Mapping)]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
    keys = [k for k in keys if k.get("kty") == "EC" and k.get("use", "sig") == "sig"]
    if not keys:
        raise ValueError("the JWKS has no EC signing key")
    key = ECKey.import_key(dict(keys[0]))
    pem = key.as_pem(private=False)
    return pem.decode() if isinstance(pem, bytes) else str(pem)


def trust_from_jwks(jwks_url: str, *, issuer: str, audiences: tuple[str, ...] = ()) -> JwtTrust:
    """Fetch an issuer's JWKS (e.g. ``home.url + "/.well-known/jwks.json"``) as a JwtTrust."""
    resp = httpx.get(jwks_url, timeout=10)
    resp.raise_for_status()
    return JwtTrust(issuer=issuer, public_key_pem=jwks_to_pem(resp.json()), audiences=audiences)


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass
class SynapseServer:
    """One Synapse process with its own data folder (see the module docstring)."""

    folder: Path
    server_name: str = "localhost"
    port: int = field(default_factory=free_port)
    jwt: JwtTrust | None = None
    rate_limits: Mapping[str, Any] = field(default_factory=dict)
    extra_config: Mapping[str, Any] = field(default_factory=dict)
    shared_secret: str = field(default_factory=lambda: secrets.token_hex(16))
    python: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _admin: str | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def url(self) -> str:
        """The client-server API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Synapse's log (stdout and stderr)."""
        return self.folder / "homeserver.log"

    @property
    def config_path(self) -> Path:
        """The configuration file written by :meth:`write_config`."""
        return self.folder / "homeserver.yaml"

    @property
    def pid(self) -> int | None:
        """The running process's id."""
        return self._proc.pid if self._proc is not None else None

    def config(self) -> dict[str, Any]:
        """The homeserver configuration (as data)."""
        d = self.folder
        cfg: dict[str, Any] = {
            "server_name": self.server_name,
            "pid_file": str(d / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http",
                           "tls": False, "x_forwarded": False,
                           "resources": [{"names": ["client"], "compress": False}]}],
            "database": {"name": "sqlite3", "args": {"database": str(d / "homeserver.db")}},
            "media_store_path": str(d / "media"),
            "signing_key_path": str(d / "signing.key"),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": "macaroon-" + self.shared_secret,
            "form_secret": "form-" + self.shared_secret,
            "report_stats": False,
            "enable_metrics": False,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "presence": {"enabled": True},
            "bcrypt_rounds": 4,  # a throw-away server: fast password hashing (default 12)
            **_merge(DEFAULT_RATE_LIMITS, self.rate_limits),
        }
        if self.jwt is not None:
            jwt_cfg: dict[str, Any] = {
                "enabled": True, "secret": self.jwt.public_key_pem,
                "algorithm": self.jwt.algorithm, "issuer": self.jwt.issuer,
                "audiences": list(self.jwt.audiences or (self.url,)),
                "subject_claim": self.jwt.subject_claim}
            if self.jwt.display_name_claim:
                jwt_cfg["display_name_claim"] = self.jwt.display_name_claim
            cfg["jwt_config"] = jwt_cfg
        return _merge(cfg, self.extra_config)

    def write_config(self) -> Path:
        """Write the configuration (JSON is YAML) and return its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "media").mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=1))
        return self.config_path

    # --- process ---------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process without waiting (pair with :meth:`wait_ready`)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        python = self.python or find_synapse_python(need_jwt=self.jwt is not None)
        self.write_config()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            cwd=self.folder, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until ``/_matrix/client/versions`` answers 200 (or the process died)."""
        assert self._proc is not None, "launch() first"
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    raise SynapseUnavailable(f"Synapse exited with code {self._proc.returncode}"
                                             f" during start-up:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(self.url + "/_matrix/client/versions").status_code == 200:
                        return
                time.sleep(0.1)
        self.stop()
        raise SynapseUnavailable(f"Synapse did not answer within {timeout:.0f} s:\n"
                                 f"{self.log_tail()}")

    def start(self, timeout: float = 60.0) -> SynapseServer:
        """Start and wait until ready."""
        self.launch()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Terminate the process by its PID and wait for it (the data stays)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop, then start again on the same port and data."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 30) -> str:
        """The end of Synapse's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> SynapseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- users -----------------------------------------------------------------------------

    def _mac(self, nonce: str, username: str, password: str, admin: bool) -> str:
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        for part in (nonce, username, password):
            mac.update(part.encode() + b"\x00")
        mac.update(b"admin" if admin else b"notadmin")
        return mac.hexdigest()

    def user_id(self, localpart: str) -> str:
        """The MXID of ``localpart`` on this server."""
        return f"@{localpart}:{self.server_name}"

    def _registration(self, nonce: str, username: str, password: str, admin: bool,
                      displayname: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"nonce": nonce, "username": username, "password": password,
                                "admin": admin,
                                "mac": self._mac(nonce, username, password, admin)}
        if displayname:
            body["displayname"] = displayname
        return body

    @staticmethod
    def _registered(username: str, resp: httpx.Response) -> dict[str, Any]:
        if resp.status_code != 200:
            raise RuntimeError(f"registering {username} failed: HTTP {resp.status_code} "
                               f"{resp.text[:300]}")
        data: dict[str, Any] = resp.json()
        return data

    def register(self, username: str, password: str, *, admin: bool = False,
                 displayname: str | None = None) -> dict[str, Any]:
        """Register a user (shared-secret admin API); returns user_id, access_token, device_id."""
        path = self.url + "/_synapse/admin/v1/register"
        with httpx.Client(timeout=30) as http:
            nonce = http.get(path).raise_for_status().json()["nonce"]
            return self._registered(username, http.post(path, json=self._registration(
                nonce, username, password, admin, displayname)))

    async def aregister(self, username: str, password: str, *, admin: bool = False,
                        displayname: str | None = None) -> dict[str, Any]:
        """:meth:`register` without blocking the event loop."""
        path = self.url + "/_synapse/admin/v1/register"
        async with httpx.AsyncClient(timeout=30) as http:
            nonce = (await http.get(path)).raise_for_status().json()["nonce"]
            return self._registered(username, await http.post(path, json=self._registration(
                nonce, username, password, admin, displayname)))

    async def admin_token(self) -> str:
        """An access token of a server admin (registered on first use) for the admin API."""
        if self._admin is None:
            name = f"admin_{secrets.token_hex(4)}"
            data = await self.aregister(name, secrets.token_urlsafe(16), admin=True)
            self._admin = str(data["access_token"])
        return self._admin

    async def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """Call the admin API (``path`` after ``/_synapse/admin``) as the admin."""
        headers = {"Authorization": f"Bearer {await self.admin_token()}"}
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.request(method, self.url + "/_synapse/admin" + path,
                                      json=body, headers=headers)
            if resp.status_code != 200:
                raise RuntimeError(f"admin {method} {path} failed: HTTP {resp.status_code} "
                                   f"{resp.text[:300]}")
            data: dict[str, Any] = resp.json()
            return data


# --- pytest ------------------------------------------------------------------------------------


def _session_synapse(folder: Path, home_url: str) -> Iterator[SynapseServer]:
    try:
        python = find_synapse_python(need_jwt=True)
    except SynapseUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    home_url = home_url.rstrip("/")
    trust = trust_from_jwks(home_url + "/.well-known/jwks.json", issuer=home_url)
    server = SynapseServer(folder, jwt=trust, python=python)
    try:
        server.start()
        yield server
    finally:
        server.stop()


if _PYTEST:
    @pytest.fixture(scope="session")
    def matrix_synapse(tmp_path_factory: pytest.TempPathFactory,
                       interapp_home: Any) -> Iterator[SynapseServer]:
        """One Synapse per test session, trusting ``interapp_home``'s issuer for JWT login.

        Its JWT audience is its own URL. Fails (never skips) when Synapse is not installed.
        """
        yield from _session_synapse(tmp_path_factory.mktemp("synapse"), str(interapp_home.url))


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, SynapseServer(Path(tmp)) as hs:
        print(hs.url, hs.register("alice", "alicepw"), file=sys.stderr)
