"""Keep the server's resident memory where its work is, not where its allocator left it.

Theory of operation: an argon2id hash (:mod:`interapp.server.passwords`) asks ``malloc`` for a
19 MiB block in one of the hashing threads. glibc serves the first such block with ``mmap`` and
gives it back on ``free``, but it then raises its *dynamic* mmap threshold to the size of that
block, so every later block of that size comes from the thread's own arena and stays there
after ``free``: ~19 MiB of resident memory kept per thread that ever hashed. Measured on a
soak (``tests/server/test_server_soak.py``), that was most of the growth of an idle-looking
server once password logins had been served (docs/performance.md, "Memory").

:func:`return_large_blocks` fixes the threshold with ``mallopt(M_MMAP_THRESHOLD, …)``, which also
turns the dynamic adjustment off: blocks of 1 MiB and more are always mapped and unmapped, so
they leave the process when freed. Python's own objects are far smaller and are not affected.
No library exposes ``mallopt``; it is one call through :mod:`ctypes`, done once per process, and
a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["LARGE_BLOCK_BYTES", "return_large_blocks"]

LARGE_BLOCK_BYTES = 1024 * 1024
"""Allocations of this size and more are served by ``mmap`` and returned on ``free``."""

_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_done = False
log = logging.getLogger("interapp.server.memory")


def return_large_blocks(threshold: int = LARGE_BLOCK_BYTES) -> bool:
    """Make glibc map (and unmap on ``free``) every block of ``threshold`` bytes or more.

    Idempotent; True when the setting is in force (False off Linux/glibc).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = int(mallopt(_M_MMAP_THRESHOLD, threshold)) == 1
    if not _done:
        log.info("mallopt(M_MMAP_THRESHOLD) refused; large blocks stay in the arenas")
    return _done
