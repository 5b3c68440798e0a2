"""What the command line adds to an error: the command that gets the user further.

The host's errors say what happened, in words, and carry a stable ``code`` plus the target
and account concerned; this face turns those into the commands to run (the web UI and the
agent add their own hints).
"""

from __future__ import annotations

from interapp.host import InterappError


def _account(exc: InterappError) -> str:
    return getattr(exc, "account", None) or "U"


def hint(exc: InterappError) -> str:
    """The text to append to ``exc.message`` on the command line ('' when none)."""
    t = exc.target or "NAME"
    code = exc.code
    if code == "no_local_app":
        return ": run 'interapp local --server URL --client-id ID' first"
    if code == "not_signed_in":
        return ": run 'interapp login USERNAME' first"
    if code == "not_found" and exc.target is not None and "no target" in exc.message:
        return f"; add it with 'interapp targets add {t} --plugin … --server …'"
    if code == "prompt_unavailable":
        return (f"; link the account with `interapp connect {t}` (interactive) or "
                f"`interapp connect {t} --username U --password-stdin`")
    if code == "needs_reauth" and exc.target is not None:
        return (f"; sign in again with `interapp connect {t}` (interactive) or "
                f"`interapp connect {t} --username {_account(exc)} --password-stdin`")
    if code == "link_mismatch":
        return f" (`interapp unlink {t}`, then `interapp connect {t}`)"
    if code == "server_changed":
        return f" (`interapp unlink {t}` and connect again)"
    if code == "way_unavailable":
        return (f" (`interapp plugins --json` lists each plug-in's link_ways; "
                f"`interapp connect {t}` alone picks one that works here)")
    if code in ("access_denied", "expired_token", "authorization_mismatch"):
        return f"; try again with `interapp connect {t}`"
    if code == "missing_extra":
        extra = getattr(exc, "extra", "") or "all"
        return f" (pip install 'interapp[{extra}]')"
    return ""


def render(exc: InterappError) -> str:
    """The one line the command line prints for ``exc`` (without the 'interapp: error:')."""
    return exc.message + hint(exc)
