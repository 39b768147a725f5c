"""Shared benchmark helpers: side-by-side timing in one process, best of interleaved rounds.

Importing it sets malloc as circuitpath's commands and training do (`heap.keep_freed_memory`), for
every candidate of a benchmark alike; CIRCUITPATH_MALLOC=default measures under glibc's defaults.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the plain reference implementation the tests use

from circuitpath.training.heap import keep_freed_memory  # noqa: E402

MALLOC = "freed memory kept" if keep_freed_memory() else "glibc's malloc defaults"


def measure(candidates: dict[str, Callable[[], object]], rounds: int = 20, seconds: float = 0.1) -> dict[str, float]:
    """Seconds per call of each candidate: best over `rounds` interleaved rounds of ~`seconds` each.

    Interleaving puts every candidate under the same machine conditions; the best round is the
    least disturbed by other load, so ratios between candidates are what to read.
    """
    calls = {}
    for name, fn in candidates.items():  # warm up and size each round
        fn()
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(seconds / max(time.perf_counter() - start, 1e-6)))
    best = {name: float("inf") for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls[name])
    return best


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])
