"""The host side: connecting the logged-in user to targets (link-or-prompt flow)."""
