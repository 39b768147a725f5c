"""circuitpath: circuits along the training path of a one-layer cross-attention transformer.

Reproduces and extends "Easing Optimization Paths: a Circuit Perspective" (Odonnat, Bouaziz,
Cabannes, ICASSP 2025) on sparse modular addition.
"""

import importlib
import sys

__version__ = "0.1.0"

from circuitpath import pinning

pinning.pin_at_import()  # before torch's first kernel: see circuitpath.pinning


from circuitpath.config import ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.errors import (
    CheckpointError,
    CircuitPathError,
    ConfigError,
    HookError,
    InputError,
    NotApplicableError,
    RunError,
)

#: Names from modules that import torch, loaded on first use (PEP 562): `import circuitpath` and
#: `circuitpath --help` need no torch.
LAZY = {
    "Split": "circuitpath.data", "make_split": "circuitpath.data",
    "CrossAttentionTransformer": "circuitpath.models.model", "build_model": "circuitpath.models.model",
    "StandardTransformer": "circuitpath.models.transformer",
    "Run": "circuitpath.runs", "load_run": "circuitpath.runs",
    "Interrupted": "circuitpath.training.train", "resume": "circuitpath.training.train",
    "train": "circuitpath.training.train", "train_many": "circuitpath.training.train",
}


def __getattr__(name: str):
    if name not in LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(LAZY[name]), name)
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__() -> list[str]:
    """The public names (`__all__`), not the modules this one imports."""
    return sorted([*__all__, "__version__"])


__all__ = [
    "CheckpointError",
    "CircuitPathError",
    "ConfigError",
    "CrossAttentionTransformer",
    "HookError",
    "InputError",
    "Interrupted",
    "ModelConfig",
    "NotApplicableError",
    "Phase",
    "Run",
    "RunConfig",
    "RunError",
    "Split",
    "StandardTransformer",
    "TaskConfig",
    "TrainConfig",
    "build_model",
    "load_run",
    "make_split",
    "parse_phases",
    "resume",
    "train",
    "train_many",
]
