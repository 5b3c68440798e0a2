"""The local application's web face: ``interapp ui``.

Server-rendered pages (Starlette + Jinja2) and one small script of the project's own
(``static/app.js``) that talks to the UI server with ``fetch`` and one WebSocket; no CDN, no
build step. The UI server runs a :class:`~interapp.host.Host` on the same data folder,
vault and targets as the CLI. See ``docs/web.md``.

Modules: :mod:`~interapp.web.security` (launch secret, session cookie, CSRF),
:mod:`~interapp.web.live` (updates to the pages, the web prompter),
:mod:`~interapp.web.service` (what the UI does with the host), :mod:`~interapp.web.app` (routes),
:mod:`~interapp.web.server` (running it).
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
