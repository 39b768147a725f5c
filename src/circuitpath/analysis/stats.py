"""Small statistics shared by the experiments over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (0, 1) when n = 0.

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n successes,
    which is where rates over a few dozen seeds often sit.
    """
    if n == 0:
        return 0.0, 1.0
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the bounds hold the rate itself: at 0 or n successes rounding could leave it a hair outside
    return min(rate, max(0.0, centre - half)), max(rate, min(1.0, centre + half))


@dataclass
class Rate:
    """k of n, with its Wilson 95% interval."""

    k: int
    n: int

    @property
    def rate(self) -> float:
        return self.k / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def text(self) -> str:
        if self.n == 0:
            return "-"
        low, high = self.interval
        return f"{self.k}/{self.n} {self.rate:4.0%} [{low:.2f}, {high:.2f}]"

    def to_dict(self) -> dict:
        return {"k": self.k, "n": self.n, "rate": self.rate if self.n else None, "wilson_95": list(self.interval)}

    def __add__(self, other: Rate) -> Rate:
        return Rate(self.k + other.k, self.n + other.n)
