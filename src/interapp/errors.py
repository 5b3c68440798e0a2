"""The one exception tree of interapp.

Every error carries a machine ``code`` (stable, scripts may match on it) and a human ``message``
(one line, never a secret). Errors that travel over the wire are mapped to and from classes
through :data:`REGISTRY`, shared by the server (which renders them) and the clients/plug-ins
(which raise them again), in the manner of mautrix and Authlib::

    InterappError
    ├── ConfigError                  bad configuration or command-line input
    │   ├── NotFoundError            a named app, user, target or plug-in does not exist
    │   │   ├── UnknownPerson        no person of the local user has that id or name
    │   │   └── UnknownAccount       no such buddy account on that target
    │   ├── AccountInPerson          the account is already part of another person
    │   ├── NoLocalApp               no local application is configured yet
    │   ├── NotSignedIn              nobody is signed in to the local application
    │   └── MissingExtra             an optional part is not installed (pip install interapp[X])
    ├── StorageError                 the database could not be used
    │   ├── UnavailableError         a backing service is down (HTTP 503 + Retry-After)
    │   ├── ValueRefused             the database cannot hold a value (the API answers 400)
    │   └── ConcurrentChange         lost a race with a concurrent change (the API answers 409)
    ├── OAuthError                   RFC 6749 §5.2 errors {"error", "error_description"}
    │   ├── InvalidRequest           invalid_request          400
    │   ├── InvalidClient            invalid_client           401
    │   ├── InvalidGrant             invalid_grant            400
    │   ├── UnauthorizedClient       unauthorized_client      400
    │   ├── UnsupportedGrantType     unsupported_grant_type   400
    │   ├── UnsupportedTokenType     unsupported_token_type   400  (RFC 7009)
    │   ├── InvalidTarget            invalid_target           400  (RFC 8693)
    │   ├── InvalidScope             invalid_scope            400
    │   ├── AccessDenied             access_denied            400  (the user said no)
    │   ├── LoginRequired            login_required           400  (OIDC prompt=none)
    │   ├── ConsentRequired          consent_required         400  (OIDC prompt=none)
    │   ├── UnsupportedResponseType  unsupported_response_type 400
    │   ├── AuthorizationPending     authorization_pending    400  (RFC 8628)
    │   ├── ExpiredToken             expired_token            400  (RFC 8628)
    │   ├── InvalidToken             invalid_token            401  (RFC 6750, userinfo)
    │   ├── InsufficientScope        insufficient_scope       403  (RFC 6750, userinfo)
    │   └── SlowDown                 slow_down                429  (login rate limit)
    │       └── PollingTooFast       slow_down                400  (RFC 8628 polling)
    ├── ApiError                     /v1/* errors              {"error", "message"}
    │   ├── BadRequest               bad_request              400
    │   │   ├── CursorUnknown        cursor_unknown           400  (stream ?since= past the log)
    │   │   ├── InvalidActivity      invalid_activity         400  (rich presence: bad activity)
    │   │   └── InvalidInvite        invalid_invite           400  (a malformed invite)
    │   ├── Unauthorized             unauthorized             401
    │   ├── Forbidden                forbidden                403
    │   ├── ApiNotFound              not_found                404
    │   ├── RequestTimeout           request_timeout          408  (headers or body too slow)
    │   ├── Conflict                 conflict                 409
    │   │   └── InviteClosed         invite_closed            409  (answered or expired already)
    │   ├── PayloadTooLarge          payload_too_large        413
    │   ├── UpgradeRequired          upgrade_required         426  (GET /v1/events, no upgrade)
    │   └── RateLimited              rate_limited             429
    ├── LinkError                    the host's link-or-prompt flow
    │   ├── PromptUnavailable        no face can answer a prompt
    │   ├── PromptDeclined           the user declined the prompt
    │   ├── LoginRefused             the target refused the answers given at the prompt
    │   ├── AssertionRefused         same account system: no assertion, no fallback
    │   ├── LinkMismatch             a different remote account than the link's
    │   ├── NeedsReauth              the stored credential was refused
    │   ├── ServerChanged            the target now names another server than the link's
    │   ├── AuthorizationMismatch    a browser answer with the wrong state or iss (RFC 9207)
    │   └── WayUnavailable           the link way asked for (--via) is not offered here
    ├── VaultError                   the encrypted link vault
    │   ├── VaultLocked              no master key available
    │   └── VaultTampered            ciphertext or audit chain failed verification
    └── PluginError                  a plug-in misbehaved
        ├── PluginCrashed            it raised
        ├── PluginTimeout            it hung
        ├── Unsupported              the plug-in or its network cannot do this
        └── ConnectionLost           the network dropped (link becomes ``degraded``)
"""

from __future__ import annotations

from typing import Any, ClassVar


class InterappError(Exception):
    """Base of every error interapp raises on purpose."""

    code: ClassVar[str] = "interapp_error"
    status: ClassVar[int] = 500
    #: The target (opposite application) the error is about, when there is one.
    target: str | None = None
    #: For a failed connect: the resolver's trace, step by step (``--explain``).
    explain: str = ""

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        self.message = message or self.code.replace("_", " ")
        self.retry_after = retry_after
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class ConfigError(InterappError):
    """Bad configuration or command-line input."""

    code = "config_error"
    status = 400


class NotFoundError(ConfigError):
    """A named app, user, target or plug-in does not exist."""

    code = "not_found"
    status = 404


class UnknownPerson(NotFoundError):
    """No person (a merge of accounts, ``host.people()``) has that id or name."""

    code = "unknown_person"


class UnknownAccount(NotFoundError):
    """The account named is not a buddy on that target (or the person has none there)."""

    code = "unknown_account"


class AccountInPerson(ConfigError):
    """The account is already part of another person: split it from that one first."""

    code = "account_in_person"
    status = 409


class NoLocalApp(ConfigError):
    """No local application is configured yet (``set_local``, ``interapp local``)."""

    code = "no_local_app"


class NotSignedIn(ConfigError):
    """Nobody is signed in to the local application (``sign_in``, ``interapp login``)."""

    code = "not_signed_in"


class MissingExtra(ConfigError):
    """An optional part of interapp is not installed; ``extra`` names what to install."""

    code = "missing_extra"

    def __init__(self, message: str | None = None, *, extra: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.extra = extra


class StorageError(InterappError):
    """The database could not be used."""

    code = "storage_error"
    status = 503


class UnavailableError(StorageError):
    """A backing service is down; try again later."""

    code = "unavailable"
    status = 503


class ValueRefused(StorageError):
    """The database refused a value it cannot hold (too long, out of range, …).

    Raised by the storage layer; the HTTP layer answers it as :class:`BadRequest`
    (``interapp.server.api.errors``), since such a value can only have come from the caller.
    """

    code = "value_refused"
    status = 400


class ConcurrentChange(StorageError):
    """A write lost a race with a concurrent change (a uniqueness or foreign-key conflict).

    Raised by the storage layer; the HTTP layer answers it as :class:`Conflict`.
    """

    code = "concurrent_change"
    status = 409


# --- OAuth 2.0 (RFC 6749 §5.2, RFC 7009 §2.2.1, RFC 8693 §2.2.2) ---------------------------


class OAuthError(InterappError):
    """An error of the token, revocation or introspection endpoints."""

    code = "invalid_request"
    status = 400

    def to_wire(self) -> dict[str, Any]:
        """The RFC 6749 §5.2 JSON body."""
        return {"error": self.code, "error_description": self.message}


class InvalidRequest(OAuthError):
    """The request is missing a parameter or is otherwise malformed."""

    code = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed."""

    code = "invalid_client"
    status = 401


class InvalidGrant(OAuthError):
    """The grant (password, refresh token, assertion) is invalid, expired or revoked."""

    code = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """The client may not use this grant type."""

    code = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """The grant type is not supported."""

    code = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    """The token type hint names a token type the server cannot revoke."""

    code = "unsupported_token_type"


class InvalidTarget(OAuthError):
    """The requested audience is not acceptable (RFC 8693)."""

    code = "invalid_target"


class SlowDown(OAuthError):
    """Too many failed logins; retry after the given delay."""

    code = "slow_down"
    status = 429


class PollingTooFast(SlowDown):
    """RFC 8628 §3.5: a device polled sooner than its interval (which grows by 5 s); 400."""

    status = 400


class InvalidScope(OAuthError):
    """The requested scope is unknown or exceeds what may be granted."""

    code = "invalid_scope"


class AccessDenied(OAuthError):
    """The resource owner (or the server) denied the request."""

    code = "access_denied"


class LoginRequired(OAuthError):
    """OIDC Core §3.1.2.6: ``prompt=none`` and nobody is signed in on this browser."""

    code = "login_required"


class ConsentRequired(OAuthError):
    """OIDC Core §3.1.2.6: ``prompt=none``, but the user must be asked (always, here)."""

    code = "consent_required"


class UnsupportedResponseType(OAuthError):
    """The authorization endpoint does not issue this ``response_type``."""

    code = "unsupported_response_type"


class AuthorizationPending(OAuthError):
    """RFC 8628: the user has not finished on the verification page yet; keep polling."""

    code = "authorization_pending"


class ExpiredToken(OAuthError):
    """RFC 8628: the device code expired; start a new device authorization."""

    code = "expired_token"


class InvalidToken(OAuthError):
    """RFC 6750 §3.1: the access token is missing, expired, revoked or lacks the scope."""

    code = "invalid_token"
    status = 401


class InsufficientScope(OAuthError):
    """RFC 6750 §3.1: the access token is valid but lacks the scope this resource needs."""

    code = "insufficient_scope"
    status = 403


# --- /v1 API ---------------------------------------------------------------------------------


class ApiError(InterappError):
    """An error of the ``/v1`` API, rendered as ``{"error": code, "message": text}``."""

    code = "bad_request"
    status = 400

    def to_wire(self) -> dict[str, Any]:
        """The ``/v1`` JSON error body."""
        return {"error": self.code, "message": self.message}


class BadRequest(ApiError):
    """The request body or parameters are invalid."""

    code = "bad_request"


class CursorUnknown(BadRequest):
    """An event stream's ``?since=`` is past the account's newest ``seq`` (e.g. a cursor kept
    across a reset of the server's database); ``last_seq`` is where the log really ends."""

    code = "cursor_unknown"

    def __init__(self, message: str | None = None, *, last_seq: int = 0,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.last_seq = last_seq

    def to_wire(self) -> dict[str, Any]:
        """The error body, with the ``last_seq`` to resume from."""
        return {**super().to_wire(), "last_seq": self.last_seq}


class InvalidActivity(BadRequest):
    """A rich-presence activity is malformed or over a size bound (nothing is stored)."""

    code = "invalid_activity"


class InvalidInvite(BadRequest):
    """An invite is malformed (bad join link, message too long, …); nothing is stored."""

    code = "invalid_invite"


class Unauthorized(ApiError):
    """No valid access token."""

    code = "unauthorized"
    status = 401


class Forbidden(ApiError):
    """The account may not do this."""

    code = "forbidden"
    status = 403


class ApiNotFound(ApiError):
    """The resource does not exist (or is not visible to this account)."""

    code = "not_found"
    status = 404


class RequestTimeout(ApiError):
    """The request's headers or body did not arrive in time."""

    code = "request_timeout"
    status = 408


class Conflict(ApiError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class InviteClosed(Conflict):
    """The invite was answered already, or has expired."""

    code = "invite_closed"


class PayloadTooLarge(ApiError):
    """The request body is over the size limit."""

    code = "payload_too_large"
    status = 413


class UpgradeRequired(ApiError):
    """A WebSocket endpoint was requested without the upgrade (HTTP 426 + ``Upgrade``)."""

    code = "upgrade_required"
    status = 426


class RateLimited(ApiError):
    """Too many requests."""

    code = "rate_limited"
    status = 429


# --- host, vault, plug-ins ---------------------------------------------------------------------


class LinkError(InterappError):
    """The link-or-prompt flow could not complete.

    ``target`` names the target, ``account`` the remote account concerned (the link's, when
    there is one) and ``cause`` what the target or plug-in said, so that each face can render
    its own hint (a command, a button) next to the message.
    """

    code = "link_error"

    def __init__(self, message: str | None = None, *, retry_after: float | None = None,
                 target: str | None = None, account: str | None = None,
                 cause: str = "") -> None:
        super().__init__(message, retry_after=retry_after)
        self.target = target
        self.account = account
        self.cause = cause


class PromptUnavailable(LinkError):
    """A prompt was needed but no face can answer it."""

    code = "prompt_unavailable"


class PromptDeclined(LinkError):
    """The user declined (or did not answer) the prompt."""

    code = "prompt_declined"


class LoginRefused(LinkError):
    """The target refused the account information given at the prompt."""

    code = "login_refused"


class AssertionRefused(LinkError):
    """Same account system: no assertion was issued or accepted, and nothing to fall back to."""

    code = "assertion_refused"


class LinkMismatch(LinkError):
    """A different remote account than the link's: asked for, or signed in as, at a re-link."""

    code = "link_mismatch"


class NeedsReauth(LinkError):
    """The stored credential was refused by the target; the user must sign in again."""

    code = "needs_reauth"


class ServerChanged(LinkError):
    """The target's configuration names another server than the one the link was made with;
    its credential is never sent there."""

    code = "server_changed"


class AuthorizationMismatch(LinkError):
    """The browser came back with another ``state`` than the host sent, or without the
    target's ``iss`` (RFC 9207): the answer is not used (possible CSRF or mix-up attack)."""

    code = "authorization_mismatch"


class WayUnavailable(LinkError):
    """The link way asked for (``--via browser|device|password``) is not offered by the
    target's plug-in or server, or this face cannot do it."""

    code = "way_unavailable"


class VaultError(InterappError):
    """The encrypted link vault could not be used."""

    code = "vault_error"


class VaultLocked(VaultError):
    """No master key is available to open the vault."""

    code = "vault_locked"


class VaultTampered(VaultError):
    """A ciphertext or the audit chain failed verification."""

    code = "vault_tampered"


class PluginError(InterappError):
    """A plug-in misbehaved."""

    code = "plugin_error"


class PluginCrashed(PluginError):
    """A plug-in raised an unexpected exception."""

    code = "plugin_crashed"


class PluginTimeout(PluginError):
    """A plug-in did not answer in time."""

    code = "plugin_timeout"


class Unsupported(PluginError):
    """The plug-in (or its network) cannot do this; the host falls back where it can (a
    readable status text for an activity, a message for an invite)."""

    code = "unsupported"


class ConnectionLost(PluginError):
    """The connection to the target dropped."""

    code = "connection_lost"


# --- the wire registry -------------------------------------------------------------------------

#: Wire ``code`` → class, for errors that cross the network. Server and clients share it.
REGISTRY: dict[str, type[InterappError]] = {}


def _register(*classes: type[InterappError]) -> None:
    for cls in classes:
        REGISTRY.setdefault(cls.code, cls)


_register(
    InvalidRequest, InvalidClient, InvalidGrant, UnauthorizedClient, UnsupportedGrantType,
    UnsupportedTokenType, InvalidTarget, SlowDown, InvalidScope, AccessDenied,
    UnsupportedResponseType, AuthorizationPending, ExpiredToken, InvalidToken,
    InsufficientScope, LoginRequired, ConsentRequired,
    BadRequest, CursorUnknown, InvalidActivity, InvalidInvite, InviteClosed, Unauthorized,
    Forbidden, ApiNotFound, RequestTimeout, Conflict,
    PayloadTooLarge, UpgradeRequired, RateLimited, UnavailableError,
)


def from_wire(status: int, body: Any, retry_after: float | None = None) -> InterappError:
    """Rebuild the error a server sent, from its JSON body (either shape) and HTTP status."""
    code = ""
    message = ""
    if isinstance(body, dict):
        code = str(body.get("error", ""))
        message = str(body.get("error_description") or body.get("message") or "")
    cls = REGISTRY.get(code)
    if cls is None:
        cls = {401: Unauthorized, 403: Forbidden, 404: ApiNotFound, 409: Conflict,
               413: PayloadTooLarge, 429: RateLimited, 503: UnavailableError}.get(status, ApiError)
    if cls is CursorUnknown and isinstance(body, dict):
        return CursorUnknown(message, last_seq=int(body.get("last_seq") or 0))
    return cls(message or f"HTTP {status}", retry_after=retry_after)
