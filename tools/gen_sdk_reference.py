"""Write docs/sdk-reference.md: every public name of interapp.host with its docstring.

Run ``python tools/gen_sdk_reference.py`` after changing the SDK; ``--check`` exits 1 when the
file is out of date (the test suite runs that). Hand-rolled rather than mkdocstrings: one page
of Markdown from ``inspect`` needs no site generator in CI.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "docs" / "sdk-reference.md"


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").strip()


def _signature(obj: Any) -> str:
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    text = text.replace("'", "")  # annotations are strings (from __future__ import annotations)
    for first in ("(self, ", "(cls, "):
        text = text.replace(first, "(", 1)
    return text.replace("(self)", "()").replace("(cls)", "()")


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    # the façade's mixins (interapp.host._people …) document their methods under Host
    mixins = [c for c in cls.__mro__[1:] if c.__module__.startswith("interapp.host._")]
    merged = {k: v for c in (cls, *mixins) for k, v in c.__dict__.items()}
    for name, member in merged.items():
        if name.startswith("_") or name in ("kind",):
            continue
        if isinstance(member, classmethod | staticmethod):
            member = member.__func__
        if callable(member) or isinstance(member, property):
            out.append((name, member))
    return out


def render() -> str:
    """The reference page."""
    import interapp.host as host
    import interapp.host.blocking as blocking
    from interapp.host import events

    lines = ["# `interapp.host` reference", "",
             "Generated from the code by `tools/gen_sdk_reference.py`; the guide is "
             "[sdk.md](sdk.md).", ""]

    def section(title: str, obj: Any, qual: str) -> None:
        lines.append(f"## `{qual}`")
        lines.append("")
        if inspect.isclass(obj):
            kind = "exception" if issubclass(obj, BaseException) else "class"
            code = getattr(obj, "code", None)
            extra = f" — code `{code}`" if kind == "exception" and isinstance(code, str) else ""
            lines.append(f"*{kind}*{extra}")
        elif callable(obj):
            lines.append(f"`{title}{_signature(obj)}`")
        lines.append("")
        doc = _doc(obj) if (inspect.isclass(obj) or callable(obj)) else ""
        if doc:
            lines.extend([doc, ""])
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for name, member in _members(obj):
                target = member.fget if isinstance(member, property) else member
                sig = "" if isinstance(member, property) else _signature(target)
                doc = " ".join(_doc(target).split())
                lines.append(f"- **`{name}{sig}`** — {doc}")
            if _members(obj):
                lines.append("")

    for name in sorted(host.__all__, key=str.lower):
        if name == "events":
            continue
        obj = getattr(host, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            lines += [f"## `interapp.host.{name}`", "", f"`{obj!r}`", ""]
            continue
        section(name, obj, f"interapp.host.{name}")
    section("BlockingHost", blocking.BlockingHost, "interapp.host.blocking.BlockingHost")
    lines += ["# `interapp.host.events`", "", _doc(events), ""]
    for name in events.__all__:
        obj = getattr(events, name)
        if inspect.isclass(obj):
            section(name, obj, f"interapp.host.events.{name}")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            sys.stderr.write("docs/sdk-reference.md is out of date: run "
                             "'python tools/gen_sdk_reference.py'\n")
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
