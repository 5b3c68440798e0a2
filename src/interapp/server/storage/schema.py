"""The application server's tables (SQLAlchemy Core), mirrored by the Alembic migrations.

Theory of operation: every account has a ``last_seq`` counter; each event for that account is
written in the same transaction that bumps it (``UPDATE … SET last_seq = last_seq + 1 RETURNING``),
so sequence numbers are gap-free and ordered per account even with several server processes on
one PostgreSQL database. Tokens are stored only as SHA-256 hashes; a refresh-token *family* ties
one login to all of its rotations so that re-use of a rotated token can revoke them all.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(128), nullable=False),
    sa.Column("password_hash", sa.String(255), nullable=True),
    sa.Column("presence", sa.String(16), nullable=False, server_default="offline"),
    sa.Column("status_text", sa.String(256), nullable=False, server_default=""),
    # rich presence (0007): the activity's JSON (interapp.presence.Activity.to_json), or NULL
    sa.Column("activity", sa.Text, nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    # the trusted issuer whose assertion created the account (None: a local account); only it
    # signs in to the account by RFC 7523, unless the operator allowed another (rfc7523)
    sa.Column("external_issuer", sa.String(512), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(64), nullable=True),
    sa.Column("public", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # migration 0006: JSON list of exact redirect URIs; JSON list of grant types (NULL: the
    # grants every client had before 0006); ID token algorithm (NULL: ES256)
    sa.Column("redirect_uris", sa.Text, nullable=False, server_default="[]"),
    sa.Column("grant_types", sa.Text, nullable=True),
    sa.Column("id_token_alg", sa.String(8), nullable=True),
)

app_policy = sa.Table(  # per-application switches, e.g. password_grant = on | off (0006)
    "app_policy",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

authorization_codes = sa.Table(  # RFC 6749 §4.1 + RFC 7636, hashed, single use (0006)
    "authorization_codes",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("redirect_uri", sa.String(2048), nullable=False),
    sa.Column("redirect_given", sa.Boolean, nullable=False),
    sa.Column("scope", sa.String(256), nullable=False),
    sa.Column("code_challenge", sa.String(128), nullable=False),
    sa.Column("nonce", sa.String(512), nullable=True),
    sa.Column("auth_time", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
    sa.Column("family_id", sa.String(32), nullable=True),  # what the code issued
    sa.Index("ix_authorization_codes_expires", "expires_at"),
)

device_codes = sa.Table(  # RFC 8628 (0006)
    "device_codes",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("user_code", sa.String(16), nullable=False),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|approved|denied|issued
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=True),
    sa.Column("auth_time", sa.Float, nullable=True),
    sa.Column("interval", sa.Integer, nullable=False),
    sa.Column("last_poll_at", sa.Float, nullable=True),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("family_id", sa.String(32), nullable=True),
    sa.UniqueConstraint("user_code", name="uq_device_codes_user_code"),
    sa.Index("ix_device_codes_expires", "expires_at"),
)

browser_sessions = sa.Table(  # who signed in on the authorization pages (0006)
    "browser_sessions",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("auth_time", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_browser_sessions_expires", "expires_at"),
)

token_families = sa.Table(
    "token_families",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("grant_type", sa.String(80), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),  # "access" | "refresh"
    sa.Column("family_id", sa.String(32), sa.ForeignKey("token_families.id", ondelete="CASCADE"),
              nullable=False, index=True),
    sa.Column("user_id", sa.String(32), nullable=False, index=True),
    sa.Column("client_id", sa.String(64), nullable=False),
    sa.Column("scope", sa.String(256), nullable=False, server_default=""),
    sa.Column("issued_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),  # refresh tokens: set when rotated
    sa.Column("revoked_at", sa.Float, nullable=True),
    # refresh tokens rotated with an idempotency key: SHA-256 of that key (migration 0002)
    sa.Column("rotation_key", sa.String(64), nullable=True),
)

app_secrets = sa.Table(
    "app_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

trusted_issuers = sa.Table(
    "trusted_issuers",
    metadata,
    sa.Column("issuer", sa.String(512), primary_key=True),
    sa.Column("jwks", sa.Text, nullable=True),
    sa.Column("jwks_url", sa.String(1024), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # may this issuer sign in to accounts it did not create (local ones)? (migration 0004)
    sa.Column("may_sign_in_local_accounts", sa.Boolean, nullable=False,
              server_default=sa.false()),
)

used_assertions = sa.Table(  # RFC 7523 replay protection: (issuer, jti) until expiry
    "used_assertions",
    metadata,
    sa.Column("issuer", sa.String(512), primary_key=True),
    sa.Column("jti", sa.String(256), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Index("ix_used_assertions_expires", "expires_at"),
)

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("contact_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    # "accepted" | "outgoing" (user asked contact) | "incoming" (contact asked user)
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

invites = sa.Table(  # rich presence (0007): an invitation to join the sender's activity
    "invites",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("sender_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("recipient_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("client_invite_id", sa.String(128), nullable=False),
    sa.Column("activity", sa.Text, nullable=True),  # Activity.to_json, or NULL
    sa.Column("join_url", sa.String(2048), nullable=True),
    sa.Column("message", sa.String(500), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),  # pending|accepted|declined|expired
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("answered_at", sa.Float, nullable=True),
    sa.UniqueConstraint("sender_id", "client_invite_id", name="uq_invites_sender_client"),
    sa.Index("ix_invites_recipient_state", "recipient_id", "state"),
    sa.Index("ix_invites_sender_state", "sender_id", "state"),
    sa.Index("ix_invites_state_expires", "state", "expires_at"),  # the expiry sweep
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("sender_id", sa.String(32), nullable=False),
    sa.Column("recipient_id", sa.String(32), nullable=False),
    sa.Column("client_msg_id", sa.String(128), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("conv_key", sa.String(65), nullable=False),
    sa.UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_client_msg"),
    sa.Index("ix_messages_conv", "conv_key", "id"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

tickets = sa.Table(
    "event_tickets",
    metadata,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    # the access token it was minted with: its stream closes when that is revoked (0005)
    sa.Column("token_hash", sa.String(64), nullable=True),
)

revocations = sa.Table(  # accounts whose tokens were just revoked: open streams re-check (0005)
    "revocations",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("user_id", sa.String(32), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_revocations_created", "created_at"),
)
