"""Where interapp keeps its data: ``$INTERAPP_HOME``, else the XDG data folder."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """The data folder, created (mode 0700) if missing."""
    env = os.environ.get("INTERAPP_HOME")
    if env:
        base = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        base = Path(xdg) / "interapp"
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base


def app_dir(app: str) -> Path:
    """The folder of one application server's default data."""
    d = data_home() / "apps" / app
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d
