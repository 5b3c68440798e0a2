"""``interapp agent``: the long-running local host, and its local API for any language.

One agent per data folder keeps every linked target connected, holds presence and keeps one
event stream per target; applications in any language use it over ``/agent/v1`` (JSON and one
WebSocket; see ``docs/agent.md``), and the command line and the web UI go through it when it
runs. It is a face: it uses only :mod:`interapp.host`'s public API.

Modules: :mod:`~interapp.agent.core` (the agent and every action), :mod:`~interapp.agent.api`
(routes), :mod:`~interapp.agent.models` (their shapes: the OpenAPI document),
:mod:`~interapp.agent.guard` (tokens, Host and Origin), :mod:`~interapp.agent.tokens`,
:mod:`~interapp.agent.eventlog` (the durable event log), :mod:`~interapp.agent.prompts`,
:mod:`~interapp.agent.server` (running it), :mod:`~interapp.agent.client` (reaching it).
"""

from __future__ import annotations

__all__ = ["Agent", "RemoteHost", "find_agent", "run"]


def __getattr__(name: str) -> object:
    if name == "Agent":
        from interapp.agent.core import Agent

        return Agent
    if name in ("RemoteHost", "find_agent"):
        from interapp.agent import client

        return getattr(client, name)
    if name == "run":
        from interapp.agent.server import run

        return run
    raise AttributeError(name)
