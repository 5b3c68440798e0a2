"""The application server: one interapp *application* with its own account system.

It receives the account information a plug-in sends (OAuth 2.0 grants), verifies the user, and
only then serves that user's profile, buddies, presence, messages and live events.
"""
