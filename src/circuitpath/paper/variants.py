"""Fine-tune variants of the d = 2 pipeline: branches of a pretrained run at the end of its p = 2 phase.

finetune.py's own fine-tune is the second phase of `presets.vis_finetune`. What a researcher would
try when it fails is a variant of that phase: a lower learning rate, a warm-up, or the embedding rows
of the tokens never seen during p = 2 put back to their initial values (with the tied unembedding
those rows were only ever pushed down as outputs, see `analysis.finetune_start`). Each variant is a
branch of the run at its switch (`circuitpath.training.branch`, a new Adam), so every variant of a seed starts
from the same pretrained weights, and its run directory records what was changed (run.json key
`variant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from circuitpath.config import Phase
from circuitpath.errors import ConfigError
from circuitpath.paper.presets import VIS_BATCH, VIS_LR, VIS_STEPS
from circuitpath.runs import CHECKPOINT_DIR, RUN_JSON, Run, step_file
from circuitpath.runs.storage import CHECKSUM_KEY, load_tensors, read_json, save_tensors, write_json
from circuitpath.training.branch import BranchPlan, _create, plan_branch
from circuitpath.training.train import resume_groups

#: run.json key naming the variant a branch was made as.
VARIANT_KEY = "variant"


@dataclass(frozen=True)
class Variant:
    """A fine-tune: the phases that follow the switch (None: the parent's own), and whether the rows of
    tokens unseen before it restart from their initial values."""

    label: str
    phases: tuple[Phase, ...] | None
    reset_unseen: bool = False

    def phases_after(self, parent: Run) -> tuple[Phase, ...]:
        """The phases the branch trains after the parent's switch."""
        own = parent.config.train.phases[1:]
        if self.phases is None and not own:
            raise ConfigError(f"{parent.path} has no phase after its first: the variant {self.label!r} needs phases")
        return own if self.phases is None else self.phases


def _p4(steps: int = VIS_STEPS, lr: float = VIS_LR) -> Phase:
    return Phase(p=4, steps=steps, lr=lr, batch_size=VIS_BATCH)


#: Warm-up: the learning rate rises over the first 10 epochs in five phases of 2 epochs (each phase
#: starts a fresh Adam, as every phase does), then the rest of the 1 000 epochs at 3e-3.
WARMUP = tuple(_p4(128, VIS_LR * f) for f in (0.01, 0.03, 0.1, 0.3, 0.6)) + (_p4(VIS_STEPS - 640),)

FINETUNE_VARIANTS: dict[str, Variant] = {
    "finetune": Variant("p=4, lr 3e-3 (finetune.py)", (_p4(),)),
    "lr3e-4": Variant("p=4, lr 3e-4", (_p4(lr=3e-4),)),
    "reset": Variant("p=4, unseen rows reset to init", (_p4(),), reset_unseen=True),
    "warmup": Variant("p=4, lr warm-up over 10 epochs", WARMUP),
}

#: `reproduce`'s variant (`presets.VIS_RESET`): the parent's own fine-tune, unseen rows reset at the switch.
RESET_OWN = Variant("the run's own fine-tune, unseen token rows reset to init", None, reset_unseen=True)


def switch_step(run: Run) -> int:
    """The last step of the run's first phase (its p = 2 pretraining)."""
    return run.config.train.phase_starts()[1] if len(run.config.train.phases) > 1 else run.config.train.total_steps


def unseen_tokens(run: Run, phase: int = 0) -> list[int]:
    """Embedding rows whose token never occurs in the training inputs of phases 0..`phase`."""
    seen = set()
    for index in range(phase + 1):
        seen |= set(run.data(index).x_train.unique().tolist())
    return [t for t in range(run.config.model.n_tokens) if t not in seen]


def plan_variant(parent: Run, variant: Variant, out: str | Path) -> BranchPlan:
    """The branch of `parent` at its switch with the variant's phases; checked, nothing written."""
    return plan_branch(parent, switch_step(parent), variant.phases_after(parent), out, new_phase=True)


def make_variants(parents: list[Run], variant: Variant, outs: list[Path], *, force: bool = False,
                  progress: bool = True) -> list[Run]:
    """Branch every parent as `variant` into its `outs` entry, then train the branches as one group."""
    plans = [plan_variant(parent, variant, out) for parent, out in zip(parents, outs)]
    for plan in plans:
        _create(plan, force)
        _record(plan, variant)
    return resume_groups([[plan.out for plan in plans]], progress=progress, note_resume=False)[0]


def _record(plan: BranchPlan, variant: Variant) -> None:
    """Apply the variant's surgery at the branch step, and say in run.json what was done."""
    tokens = unseen_tokens(plan.parent) if variant.reset_unseen else []
    if tokens:
        reset_rows(plan.out, plan.step, tokens)
    info = read_json(plan.out / RUN_JSON)
    info[VARIANT_KEY] = {"label": variant.label, "reset_rows": tokens}
    write_json(plan.out / RUN_JSON, info)


def reset_rows(run_dir: Path, step: int, tokens: list[int]) -> None:
    """W_E's rows of `tokens` at `step` back to the run's step-0 values (W_U's with them when tied; an
    untied W_U keeps its columns: only the inputs' rows restart)."""
    path = Path(run_dir) / CHECKPOINT_DIR / step_file(step)
    tensors, meta = load_tensors(path)
    meta.pop(CHECKSUM_KEY, None)
    initial, _ = load_tensors(Path(run_dir) / CHECKPOINT_DIR / step_file(0))
    rows = torch.tensor(tokens)
    W_E = tensors["W_E"].clone()
    W_E[rows] = initial["W_E"][rows]
    save_tensors(path, {**tensors, "W_E": W_E}, meta)
