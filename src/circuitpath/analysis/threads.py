"""One thread for analyses: their operations are small, and extra threads only wait on busy cores."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def single_threaded():
    """Torch's and the BLAS/OpenMP pools (scikit-learn's k-means) at one thread, restored after.

    On a machine where other work keeps the cores busy, a small operation with two threads waits
    for the second one: measured on 2 busy cores, the barrier of Fig. 6 took 6.4-7.8 s with two
    threads and 0.8 s with one, the attention flow of Fig. 2 22 s against 6-7 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
