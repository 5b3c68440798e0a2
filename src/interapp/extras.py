"""The optional parts of interapp (pip extras), and the one-line error when one is missing.

``pip install interapp`` gives the host SDK, its command line and the interapp plug-in. The
application server (``[server]``), the web UI and the local agent (``[web]``), the XMPP
plug-in (``[xmpp]``) and a PostgreSQL vault (``[postgres]``) are extras; ``[all]`` is
everything. Code that needs one calls :func:`require` first, so a user without it reads which
extra to install instead of a traceback about a module they never heard of.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from interapp.errors import MissingExtra

__all__ = ["EXTRAS", "require"]

#: extra → the modules it brings that interapp imports.
EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    "server": ("fastapi", "uvicorn", "aiosqlite", "joserfc", "jinja2"),
    "web": ("fastapi", "starlette", "uvicorn", "jinja2"),
    "xmpp": ("slixmpp",),
    "postgres": ("psycopg",),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    out = []
    for module in EXTRAS[extra]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package that fails, or a blocked name
            found = False
        if not found:
            out.append(module)
    return out


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` naming ``extra`` when one of its modules is missing."""
    gone = missing(extra)
    if gone:
        raise MissingExtra(f"{what} needs interapp's [{extra}] part ({', '.join(gone)} is not "
                           "installed)", extra=extra)
