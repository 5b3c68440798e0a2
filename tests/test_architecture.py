"""The layers of the code, checked on its import statements (ast: no module is imported).

    faces      cli (host commands, demo), web, agent       → only interapp.host's public names
    façade     interapp.host (facade, _slot, _hub, driver, localapp, prompts, …)
    stores     vault, client (the HTTP client for interapp servers), server (its own stack)
    core       errors, secret, ids, presence, paths, plugins.contract, host.lifecycle,
               host.resolver

Every import points down; a face never reaches a plug-in object, the vault or a private
module of the host. See docs/architecture.md.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "interapp"

CORE = ("interapp.errors", "interapp.secret", "interapp.ids", "interapp.presence",
        "interapp.paths", "interapp.extras", "interapp.plugins.contract", "interapp.host.lifecycle",
        "interapp.host.resolver", "interapp.plugins.linkways")
#: The core modules a face may import directly (besides interapp.host's public names).
FACE_ALLOWED_CORE = ("interapp.errors", "interapp.secret", "interapp.presence",
                     "interapp.paths", "interapp.extras")
#: Faces that also run servers (``demo`` starts three; the server's own commands).
RUNS_SERVERS = {"interapp.cli.demo", "interapp.cli.server_cmds", "interapp.cli.main"}
#: Attributes that only the host's insides have: a face touching one reaches past the façade
#: (``.plugin`` alone is also a target's plug-in *name*, so private access is checked too).
INSIDE_NAMES = {"connections", "vault", "keeper", "registry", "supervised"}
FACES = ("interapp.cli", "interapp.web", "interapp.agent")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PKG.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        yield module_name(path), ast.parse(path.read_text(), str(path))


def imports(tree: ast.Module, name: str) -> Iterator[tuple[int, str]]:
    package = name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from interapp.host import events`` is a module
                yield node.lineno, f"{target}.{alias.name}"


def within(target: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def is_face(name: str) -> bool:
    if within(name, ("interapp.web", "interapp.agent")):
        return True
    return within(name, ("interapp.cli",)) and name not in ("interapp.cli.server_cmds",)


ALL = dict(modules())


def test_the_layers_are_known() -> None:
    assert "interapp.host.facade" in ALL and "interapp.cli.chat_cmds" in ALL
    assert any(is_face(n) for n in ALL)


def face_may_import(face: str, target: str) -> bool:
    """Whether module ``face`` may import ``target`` (a module, or a name from one)."""
    import interapp.host as host

    if target == "interapp" or within(target, (*FACES, *FACE_ALLOWED_CORE)):
        return True  # its own package, another face (``ui`` starts the web face), the core
    if target.count(".") == 1 and target.split(".")[1].startswith("__"):
        return True  # interapp.__version__
    if within(target, ("interapp.host.blocking", "interapp.host.events")):
        return True
    if target == "interapp.host" or (target.rsplit(".", 1) == ["interapp.host",
                                                                target.rsplit(".", 1)[-1]] \
            and target.rsplit(".", 1)[-1] in host.__all__):
        return True
    return face in RUNS_SERVERS and within(target, ("interapp.server", "interapp.testing"))


@pytest.mark.parametrize("name", sorted(n for n in ALL if is_face(n)))
def test_a_face_uses_only_the_public_host(name: str) -> None:
    bad = [f"{name}:{line} imports {t}" for line, t in imports(ALL[name], name)
           if t.startswith("interapp") and not face_may_import(name, t)]
    assert not bad, "faces must use only interapp.host's public names:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", sorted(n for n in ALL if is_face(n)))
def test_a_face_never_touches_the_hosts_insides(name: str) -> None:
    def private_of_host(node: ast.Attribute) -> bool:
        owner = node.value
        owner_name = owner.id if isinstance(owner, ast.Name) else \
            owner.attr if isinstance(owner, ast.Attribute) else ""
        return node.attr.startswith("_") and not node.attr.startswith("__") and \
            owner_name in ("host", "core")

    bad = [f"{name}:{node.lineno} .{node.attr}" for node in ast.walk(ALL[name])
           if isinstance(node, ast.Attribute) and (node.attr in INSIDE_NAMES
                                                    or private_of_host(node))]
    assert not bad, "a face reached past the façade:\n" + "\n".join(bad)


def test_the_public_host_names_are_what_all_says() -> None:
    import interapp.host as host

    for public in host.__all__:
        assert getattr(host, public) is not None, public
    assert set(host.__all__) == set(dir(host))


@pytest.mark.parametrize("name", sorted(n for n in ALL if within(n, CORE)))
def test_the_core_imports_only_the_core(name: str) -> None:
    bad = [f"{name}:{line} imports {t}" for line, t in imports(ALL[name], name)
           if t.startswith("interapp.") and not within(t, CORE)
           and t.rsplit(".", 1)[0] not in CORE]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", sorted(n for n in ALL if within(n, (
    "interapp.vault", "interapp.client", "interapp.plugins", "interapp.server"))))
def test_stores_and_plugins_never_import_the_facade_or_a_face(name: str) -> None:
    above = ("interapp.cli", "interapp.web", "interapp.agent", "interapp.host.facade",
             "interapp.host._slot", "interapp.host._hub", "interapp.host.driver",
             "interapp.host.localapp", "interapp.host.model", "interapp.host.events",
             "interapp.host.blocking")
    bad = [f"{name}:{line} imports {t}" for line, t in imports(ALL[name], name)
           if within(t, above)]
    assert not bad, "\n".join(bad)


def test_plugins_use_the_contract_and_the_client_only() -> None:
    allowed = (*CORE, "interapp.client", "interapp.plugins", "interapp.testing")
    bad = []
    for name, tree in ALL.items():
        if not within(name, ("interapp.plugins",)) or name == "interapp.plugins.contract":
            continue
        bad += [f"{name}:{line} imports {t}" for line, t in imports(tree, name)
                if t.startswith("interapp.") and not within(t, allowed)
                and t.rsplit(".", 1)[0] not in (*allowed, "interapp")]
    assert not bad, "\n".join(bad)


def test_the_server_stack_does_not_import_the_host() -> None:
    bad = []
    for name, tree in ALL.items():
        if within(name, ("interapp.server",)):
            bad += [f"{name}:{line} imports {t}" for line, t in imports(tree, name)
                    if within(t, ("interapp.host", "interapp.vault", "interapp.cli",
                                  "interapp.web"))]
    assert not bad, "\n".join(bad)
