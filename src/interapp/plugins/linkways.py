"""The ways a user can link an opposite account: browser, device, password.

Theory of operation
-------------------
In the different-account-systems branch of claim 1 the user proves who they are on the target.
A plug-in declares (statically, in :attr:`~interapp.plugins.contract.PluginSpec.link_ways`)
which of three ways it can do, and may narrow them at run time
(:meth:`~interapp.plugins.contract.Plugin.available_link_ways`, e.g. from the server's RFC 8414
metadata):

* :attr:`LinkWay.BROWSER` — the system browser opens the target's own sign-in page
  (:meth:`~interapp.plugins.contract.Plugin.begin_browser` returns a :class:`BrowserStart`
  with the URL); the answer comes back to a one-shot loopback listener of the host
  (RFC 8252) and :meth:`~interapp.plugins.contract.Plugin.finish_browser` turns it into a
  login (OAuth 2.0 code + PKCE S256; Matrix ``m.login.sso`` → ``loginToken``);
* :attr:`LinkWay.DEVICE` — RFC 8628: the host shows a code and a URL,
  :meth:`~interapp.plugins.contract.Plugin.begin_device` returns a :class:`DeviceStart`, and
  the host polls :meth:`~interapp.plugins.contract.Plugin.poll_device`;
* :attr:`LinkWay.PASSWORD` — the fields of ``account_fields`` typed into the local
  application (:meth:`~interapp.plugins.contract.Plugin.login`).

The host checks ``state`` (always) and ``iss`` (RFC 9207, when the plug-in names the issuer)
of every browser answer itself, before the plug-in sees it; PKCE's verifier stays in the
plug-in's :class:`BrowserStart` (hidden from ``repr``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from interapp.secret import HiddenMapping

__all__ = ["SECURITY_ORDER", "BrowserStart", "DeviceStart", "LinkWay", "pkce_pair"]


class LinkWay(StrEnum):
    """How the user proves who they are on the target (see the module docstring)."""

    BROWSER = "browser"
    DEVICE = "device"
    PASSWORD = "password"


#: The default preference, most secure first: the password never reaches the local
#: application in the first two (RFC 9700 §2.4), and the browser way binds the answer to this
#: machine (loopback + PKCE) while a device code could be typed anywhere.
SECURITY_ORDER: tuple[LinkWay, ...] = (LinkWay.BROWSER, LinkWay.DEVICE, LinkWay.PASSWORD)


@dataclass(frozen=True)
class BrowserStart:
    """A started browser sign-in: where to send the browser, and what finishing needs.

    ``url`` is the page to open. ``issuer``, when set, is what the answer's ``iss`` must be
    (RFC 9207; the host refuses an answer without it or with another). ``pending`` is the
    plug-in's own state for :meth:`~interapp.plugins.contract.Plugin.finish_browser` (the
    PKCE verifier, the redirect URI): never shown, never stored.
    """

    url: str
    redirect_uri: str
    issuer: str | None = None
    pending: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pending", HiddenMapping(self.pending))


@dataclass(frozen=True)
class DeviceStart:
    """A started RFC 8628 device authorization (§3.2): what to show, how often to poll.

    ``pending`` holds the ``device_code`` (a secret of the device; never shown).
    """

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float
    pending: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pending", HiddenMapping(self.pending))


def pkce_pair() -> tuple[str, str]:
    """A fresh RFC 7636 ``(code_verifier, S256 code_challenge)`` pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
