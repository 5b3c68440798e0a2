"""``make bench``: run the application-server benchmark and update ``docs/performance.md``.

Extra arguments are passed on to ``bench/server_bench.py`` (e.g. ``--quick``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def run() -> int:
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    from server_bench import main

    os.chdir(here.parent)
    return main(["--out", "docs/performance.md", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(run())
