"""Plug-in discovery through the entry-point group ``interapp.plugins``.

Only the light :class:`~interapp.plugins.contract.PluginSpec` objects are imported and checked
here; a plug-in's implementation (and its network libraries) is imported when a target that uses
it is started. A broken plug-in is reported, never fatal for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import entry_points

from interapp.errors import ConfigError, NotFoundError
from interapp.plugins.contract import PluginSpec

GROUP = "interapp.plugins"


@dataclass
class Registry:
    """Discovered plug-ins and the problems met while discovering them."""

    specs: dict[str, PluginSpec] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> PluginSpec:
        """The spec of plug-in ``name``."""
        if name in self.specs:
            return self.specs[name]
        if name in self.problems:
            raise ConfigError(f"plug-in {name!r} is broken: {self.problems[name]}")
        known = ", ".join(sorted(self.specs)) or "none"
        raise NotFoundError(f"no plug-in {name!r} installed (installed: {known})")


def discover(group: str = GROUP) -> Registry:
    """Load and check every plug-in spec announced in ``group``."""
    registry = Registry()
    for ep in entry_points(group=group):
        try:
            spec = ep.load()
            if not isinstance(spec, PluginSpec):
                raise ConfigError(f"{ep.value} is not a PluginSpec")
            spec.check(ep.name)
        except Exception as exc:  # a third party's bug must not break discovery
            registry.problems[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if spec.name in registry.specs:
            registry.problems[spec.name] = "announced twice"
            continue
        registry.specs[spec.name] = spec
    return registry
