"""Plug-ins: one per kind of opposite application. The contract is in :mod:`.contract`;
discovery (entry-point group ``interapp.plugins``) is in :mod:`interapp.host.registry`."""
