"""Handing freed heap memory back to the operating system between the phases of a long compression.

With glibc, ``free`` keeps memory of buffers below the (self-raising, up to 32 MB) mmap threshold in the
process heap, where fragmentation can leave hundreds of MB resident after the activations of a block run
and the weight temporaries of a layer are gone. ``release_free_memory`` calls ``malloc_trim(0)``, which
returns every free page to the system; it changes no allocator setting. Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the heap's free pages to the system; whether it could (glibc on Linux)."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
