"""The local application's web face: ``interapp ui``.

Server-rendered pages (Starlette + Jinja2) and one small script of the project's own
(``static/app.js``); no CDN, no build step. The UI is a client of the agent
(``interapp agent``, ``/agent/v1``): it reuses the agent of the data folder or starts one, and
every action — the pages' forms and the script's calls — is the agent's; the UI server adds the
browser's session and forwards, holding the agent's token. See ``docs/web.md``.

Modules: :mod:`~interapp.web.security` (launch secret, session cookie, CSRF),
:mod:`~interapp.web.agentlink` (find or start the agent; call it; forward to it),
:mod:`~interapp.web.views` (what the pages show, from the agent's answers),
:mod:`~interapp.web.app` (routes), :mod:`~interapp.web.server` (running it).
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from interapp.web.app import create_app

        return create_app
    if name == "serve":
        from interapp.web.server import serve

        return serve
    raise AttributeError(name)
