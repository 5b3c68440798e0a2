"""The host's hand-editable configuration: ``local.toml`` and ``targets.toml`` in the data folder.

Secrets never go in these files: client secrets live in the vault (see :mod:`._names`). A
host opened with ``memory=True`` keeps both documents in memory instead. The methods here do
file I/O: the façade calls them on the vault's worker thread, never on the event loop.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from interapp.errors import ConfigError, NoLocalApp, NotFoundError

TARGET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AccountSystem = Literal["shared", "separate"]


@dataclass(frozen=True)
class LocalApp:
    """Which interapp server is the local application, and who is logged in there."""

    server: str
    client_id: str
    issuer: str
    username: str | None = None


@dataclass(frozen=True)
class Target:
    """A configured opposite application."""

    name: str
    plugin: str
    server: str
    client_id: str | None = None
    account_system: AccountSystem = "separate"
    tls: bool | None = None
    options: dict[str, str] = field(default_factory=dict)


_PARSED: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def _read(path: Path) -> dict[str, Any]:
    """Parse a TOML file, re-reading it only when it changed (size or mtime)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _PARSED.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    _PARSED[path] = (stamp, data)
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# interapp host configuration; safe to edit by hand (no secrets here)\n"
                   + tomli_w.dumps(data))
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    _PARSED.pop(path, None)


def check_target_name(name: str) -> str:
    """Validate a target name."""
    if not TARGET_NAME.match(name):
        raise ConfigError(f"invalid target name {name!r}: use lower-case letters, digits, - _")
    return name


def check_server_url(url: str, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """Validate a server URL for a plug-in's schemes."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in schemes or len(url) <= len(scheme) + 3:
        raise ConfigError(f"--server must be a URL starting with "
                          f"{' or '.join(s + '://' for s in schemes)}")
    return url.rstrip("/")


class HostConfig:
    """Reads and writes ``local.toml`` and ``targets.toml`` in ``home`` (None: in memory)."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        base = home if home is not None else Path("<memory>")
        self.local_path = base / "local.toml"
        self.targets_path = base / "targets.toml"
        self._memory: dict[Path, dict[str, Any]] | None = {} if home is None else None
        self._built: tuple[dict[str, Any], dict[str, Target]] | None = None

    def _read(self, path: Path) -> dict[str, Any]:
        if self._memory is not None:
            return self._memory.get(path, {})
        return _read(path)

    def _write(self, path: Path, data: dict[str, Any]) -> None:
        if self._memory is not None:
            self._memory[path] = data
        else:
            _write(path, data)

    def local_or_none(self) -> LocalApp | None:
        """The local application, or None when none is configured yet."""
        try:
            return self.local()
        except NoLocalApp:
            return None

    def local(self) -> LocalApp:
        """The local application; ConfigError when none was configured."""
        data = self._read(self.local_path).get("local")
        if not data:
            raise NoLocalApp("no local application is configured yet")
        try:
            return LocalApp(server=data["server"], client_id=data["client_id"],
                            issuer=data.get("issuer", data["server"]),
                            username=data.get("username"))
        except KeyError as exc:
            raise ConfigError(f"{self.local_path}: [local] lacks {exc.args[0]}") from exc

    def set_local(self, local: LocalApp) -> None:
        """Save the local application."""
        self._write(self.local_path, {"local": {k: v for k, v in asdict(local).items()
                                                if v is not None}})

    def targets(self) -> dict[str, Target]:
        """Every configured target, by name (built once per change of the file)."""
        raw = self._read(self.targets_path).get("targets", {})
        if self._built is not None and self._built[0] is raw:
            return dict(self._built[1])
        out = self._build(raw)
        self._built = (raw, out)
        return dict(out)

    def _build(self, raw: dict[str, Any]) -> dict[str, Target]:
        out: dict[str, Target] = {}
        for name, t in raw.items():
            try:
                out[name] = Target(
                    name=check_target_name(name), plugin=str(t["plugin"]),
                    server=str(t["server"]), client_id=t.get("client_id"),
                    account_system=t.get("account_system", "separate"), tls=t.get("tls"),
                    options={str(k): str(v) for k, v in t.get("options", {}).items()})
            except KeyError as exc:
                raise ConfigError(f"{self.targets_path}: target {name} lacks "
                                  f"{exc.args[0]}") from exc
            if out[name].account_system not in ("shared", "separate"):
                raise ConfigError(f"{self.targets_path}: target {name}: account_system must "
                                  "be shared or separate")
        return out

    def target(self, name: str) -> Target:
        """One target; NotFoundError listing the known ones."""
        targets = self.targets()
        if name not in targets:
            known = ", ".join(sorted(targets)) or "none yet"
            error = NotFoundError(f"no target {name!r} (configured: {known})")
            error.target = name
            raise error
        return targets[name]

    def save_targets(self, targets: dict[str, Target]) -> None:
        """Write ``targets.toml``."""
        data: dict[str, Any] = {}
        for name, t in sorted(targets.items()):
            entry: dict[str, Any] = {"plugin": t.plugin, "server": t.server,
                                     "account_system": t.account_system}
            if t.client_id:
                entry["client_id"] = t.client_id
            if t.tls is not None:
                entry["tls"] = t.tls
            if t.options:
                entry["options"] = dict(t.options)
            data[name] = entry
        self._write(self.targets_path, {"targets": data})
