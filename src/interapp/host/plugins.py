"""Which plug-ins are installed, for faces that list them (no plug-in is imported)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from interapp.host.registry import discover

__all__ = ["PluginInfo", "available_plugins"]


@dataclass(frozen=True)
class PluginInfo:
    """One installed plug-in: its static metadata, or why it is broken (``problem``)."""

    name: str
    version: str = ""
    description: str = ""
    capabilities: dict[str, Any] | None = None
    problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data."""
        return {"name": self.name, "version": self.version, "description": self.description,
                "capabilities": self.capabilities or {}, "problem": self.problem}


def available_plugins() -> list[PluginInfo]:
    """The plug-ins announced in the ``interapp.plugins`` entry points, working ones first."""
    registry = discover()
    found = [PluginInfo(s.name, s.version, s.description, s.capabilities())
             for s in registry.specs.values()]
    return found + [PluginInfo(name, problem=problem)
                    for name, problem in registry.problems.items()]
