"""Training: the engines that compute a step, the loop that runs them, and the entry points (train, resume, branch).

Imports nothing at import time: `circuitpath.pinning` must run before torch loads.
"""
