"""The ``xmpp`` plug-in: talks to XMPP servers (Prosody, ejabberd, …) with slixmpp.

This module is what the ``interapp.plugins`` entry point names; it holds only static metadata so
that listing plug-ins never imports slixmpp. Configure a target with
``interapp targets add NAME --plugin xmpp --server xmpp://HOST[:PORT] [--tls|--no-tls]``; the
XMPP domain comes from the account (``alice@example.org``) typed as the username.

``supports_revocation`` is False on purpose: what the link keeps (SCRAM ClientKey/ServerKey, or
the password where the server offers no SCRAM) is derived from the password, and XMPP has no
way to withdraw it short of changing the password, which ``unlink`` must not do on the user's
behalf. Unlinking therefore destroys the local credential only. See ``docs/xmpp.md``.
"""

from __future__ import annotations

from interapp import __version__
from interapp.plugins.contract import PluginSpec, PromptField

PLUGIN = PluginSpec(
    name="xmpp",
    version=__version__,
    description="XMPP servers (SASL SCRAM, roster, presence, chat, MAM history, vCard)",
    implementation="interapp.plugins.xmpp.client:XmppPlugin",
    account_fields=(PromptField("username", "Account (user@domain)"),
                    PromptField("password", "Password", secret=True)),
    supports_refresh=False,
    supports_presence=True,
    supports_history=True,
    supports_assertion=False,
    supports_revocation=False,
    credential_kinds=("xmpp_scram", "xmpp_password"),
    url_schemes=("xmpp",),
    extra="xmpp",
    activity="structured",
    invites="message",
)
