"""``interapp.testing``: the plug-in conformance kit (a pytest plug-in) and real test servers.

Use it from a plug-in's test suite::

    from interapp.testing import Account, Harness, PluginConformance, Target

    class TestMyNet(PluginConformance):
        @pytest.fixture
        def harness(self, mynet_server): return MyNetHarness(mynet_server)

The pytest plug-in (entry point ``pytest11: interapp``) provides the ``interapp_home`` fixture:
a real interapp application server acting as the local application. The kit is imported lazily,
so the server launchers (``interapp.testing.servers``, ``.prosody``, ``.ejabberd``,
``.synapse``) also work where pytest is not installed (the demo uses them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interapp.testing.kit import Account, Harness, HomeApp, PluginConformance, Target

__all__ = ["Account", "Harness", "HomeApp", "PluginConformance", "Target"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from interapp.testing import kit

        return getattr(kit, name)
    raise AttributeError(f"module 'interapp.testing' has no attribute {name!r}")
