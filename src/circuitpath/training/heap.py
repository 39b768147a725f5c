"""Keeping freed memory inside the process, for training and analyses on the CPU.

Every step of the engine allocates and frees the same activations, a few MiB each for a chunk of
4 runs. With glibc's defaults a freed block of that size goes back to the kernel (it was mapped
on its own, or it sat at the top of the heap past the trim threshold), and the next step takes it
back page by page: measured, a chunk of 4 paper-sized runs alone in a process, as a Ray task
trains it, took 0.9-1.4 million page faults in 500 steps and spent 20-30% of its time in the
kernel (`python benchmarks/bench_heap.py`). Setting glibc's mmap and trim thresholds once keeps those
blocks in the heap, where the next step reuses them. Training sets them (`train.py`), and so does
every `circuitpath` command, since analyses free and retake their activations too; a notebook may
call `keep_freed_memory` itself.

The cost: a process keeps the memory it freed, up to `TRIM_THRESHOLD` per malloc arena, instead of
returning it. Set CIRCUITPATH_MALLOC=default to leave malloc as the process had it (`kept`, or
unset, sets the thresholds). On a C library
without `mallopt` (macOS, Windows) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

from circuitpath.errors import ConfigError

#: Blocks up to this size come from the heap, not from a mapping of their own (glibc allows up to 32 MiB).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of a heap is returned to the kernel only past this size.
TRIM_THRESHOLD = 256 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
OPT_OUT = "CIRCUITPATH_MALLOC"

_kept = False


def keep_freed_memory() -> bool:
    """Set glibc's thresholds for this process (once); True when they are set, now or before."""
    global _kept
    if _kept:
        return True
    choice = os.environ.get(OPT_OUT) or "kept"
    if choice not in ("kept", "default"):
        raise ConfigError(f"{OPT_OUT} must be 'kept' or 'default', got {choice!r}")
    if choice == "default" or not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    _kept = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept
