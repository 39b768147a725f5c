"""circuitpath: circuits along the training path of a one-layer cross-attention transformer.

Reproduces and extends "Easing Optimization Paths: a Circuit Perspective" (Odonnat, Bouaziz,
Cabannes, ICASSP 2025) on sparse modular addition.
"""

__version__ = "0.1.0"

from circuitpath.config import ModelConfig, Phase, RunConfig, TaskConfig, TrainConfig, parse_phases
from circuitpath.data import Split, make_split
from circuitpath.errors import (
    CheckpointError,
    CircuitPathError,
    ConfigError,
    HookError,
    InputError,
    RunError,
)
from circuitpath.model import CrossAttentionTransformer
from circuitpath.runs import Run, load_run
from circuitpath.train import Interrupted, resume, train, train_many

__all__ = [
    "CheckpointError",
    "CircuitPathError",
    "ConfigError",
    "CrossAttentionTransformer",
    "HookError",
    "InputError",
    "Interrupted",
    "ModelConfig",
    "Phase",
    "Run",
    "RunConfig",
    "RunError",
    "Split",
    "TaskConfig",
    "TrainConfig",
    "load_run",
    "make_split",
    "parse_phases",
    "resume",
    "train",
    "train_many",
]
