"""Typed identifiers shared by every part (``NewType`` keeps them apart for mypy)."""

from __future__ import annotations

from typing import NewType

UserId = NewType("UserId", str)
"""An account's stable id on one application server."""

ClientId = NewType("ClientId", str)
"""An OAuth client's ``client_id``."""

MessageId = NewType("MessageId", str)
"""A message's id on one application server."""

FamilyId = NewType("FamilyId", str)
"""A refresh-token family (one login and all its rotations)."""

LinkId = NewType("LinkId", str)
"""A link in the host's vault (local account → remote account)."""

TargetName = NewType("TargetName", str)
"""The name of a configured target (an opposite application)."""
