"""``interapp.testing``: the plug-in conformance kit (a pytest plug-in) and real test servers.

Use it from a plug-in's test suite::

    from interapp.testing import Account, Harness, PluginConformance

    class TestMyNet(PluginConformance):
        @pytest.fixture
        def harness(self, mynet_server): return MyNetHarness(mynet_server)

The pytest plug-in (entry point ``pytest11: interapp``) provides the ``interapp_home`` fixture:
a real interapp application server acting as the local application.
"""

from interapp.testing.kit import Account, Harness, HomeApp, PluginConformance

__all__ = ["Account", "Harness", "HomeApp", "PluginConformance"]
