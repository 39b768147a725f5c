"""Where does a standard transformer learn sparse modular addition? The pilot that picks the study's setting.

The rule, fixed before any run (printed with the table):

1. Stage 1, p = 2 alone: every SETTING trains seeds 0-3 on p = 2 for STAGE1_STEPS mini-batch steps.
   It *solves* p = 2 when at least 3 of the 4 seeds end at test accuracy >= 0.99.
2. Stage 2, p = 4 from scratch: the settings that solved p = 2 train seeds 0-3 on p = 4 for
   STAGE2_STEPS steps, cheapest first (cost = 12 * layers * d_model^2 * batch, the multiply-adds of
   a step's matrix products per position), stopping at the first that *fits* (at least 3 of 4 seeds
   end at train accuracy >= 0.99).
3. The study's setting is that first setting: the cheapest that solves p = 2 and fits p = 4.
   If none qualifies, the next step is width 128 (WIDER: the central setting at d 128), before anything
   else; the pilot takes it by itself.

Every setting shares the standard recipe: a pre-LayerNorm transformer with MLP width 4 d, a CLS
readout through an untied unembedding, GPT-2's initialisation (N(0, 0.02)), AdamW with betas
(0.9, 0.98) and weight decay on the matrices; T = 12, k = 5 (the first five positions), 2 048
training sequences, tokens 0-3 in the vocabulary from the start. The grid varies one thing at a
time around (d 32, 2 layers, 4 heads, batch 128, weight decay 0.1, lr 1e-3), not every combination.

Run: `python analyses/transformer_pilot.py [OUT] [--seeds 0-3]` (default runs/transformer_pilot).
Resumable: each (shape, stage) is one sweep; run the command again to finish an interrupted pilot.
The table is written to OUT/pilot.json.
"""

# %%
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from circuitpath.config import ModelConfig, TaskConfig, TrainConfig
from circuitpath.errors import CircuitPathError
from circuitpath.sweep import parse_seeds, pending_runs, read_summary, resume_sweep, sweep
from circuitpath.sweep.spec import SWEEP_JSON

STAGE1_STEPS, STAGE2_STEPS = 8000, 10000
SOLVED, FITS, SHARE = 0.99, 0.99, 0.75  # thresholds, and the share of seeds that must meet them (3 of 4)


@dataclass(frozen=True)
class Setting:
    """One point of the pilot's grid."""

    d_model: int
    n_layers: int
    n_heads: int
    batch: int = 128
    weight_decay: float = 0.1
    lr: float = 1e-3
    decay: str = "matrices"

    @property
    def shape(self) -> str:
        return f"d{self.d_model}_L{self.n_layers}H{self.n_heads}"

    @property
    def name(self) -> str:
        return f"b{self.batch}_wd{self.weight_decay:g}_lr{self.lr:g}" + ("" if self.decay == "matrices" else "_all")

    @property
    def cost(self) -> int:
        return 12 * self.n_layers * self.d_model**2 * self.batch

    def phases(self, p: int, steps: int) -> str:
        return (f"{p}:{steps}:{self.lr:g}:{self.batch}:wd={self.weight_decay:g}:betas=0.9/0.98"
                + ("" if self.decay == "matrices" else ":decay=all"))

    def model(self) -> ModelConfig:
        return ModelConfig(arch="transformer", d_model=self.d_model, d_mlp=4 * self.d_model, n_layers=self.n_layers,
                           n_heads=self.n_heads, norm="layer", tied=False, init="gpt2")


GRID = (
    Setting(32, 1, 1), Setting(32, 1, 4), Setting(32, 2, 4), Setting(32, 2, 4, batch=32),
    Setting(32, 2, 4, weight_decay=0.0), Setting(32, 2, 4, weight_decay=1.0), Setting(32, 2, 4, lr=3e-4),
    Setting(32, 2, 4, decay="all"), Setting(64, 2, 4),
)
#: Rule 3's next step when no setting of GRID qualifies: the central setting at width 128.
WIDER = Setting(128, 2, 4)


# %%
def stage_dir(out: Path, shape: str, p: int, setting: Setting | None = None) -> Path:
    """Stage 1 trains one sweep per shape; stage 2 one per setting, since it trains them one at a time."""
    return out / (f"p{p}_{shape}" if setting is None else f"p{p}_{shape}_{setting.name}")


def train_stage(out: Path, settings: list[Setting], p: int, steps: int, seeds: list[int], *, each: bool = False) -> None:
    """One sweep per shape (`each`: per setting), every setting of it an experiment (resumed if interrupted)."""
    groups = [[s] for s in settings] if each else [[s for s in settings if s.shape == shape]
                                                   for shape in sorted({s.shape for s in settings})]
    for group in groups:
        where = stage_dir(out, group[0].shape, p, group[0] if each else None)
        if (where / SWEEP_JSON).is_file():
            if pending_runs(where):
                resume_sweep(where)
            continue
        print(f"== p = {p}, {group[0].shape}: {', '.join(s.name for s in group)}", flush=True)
        sweep(where, seeds, {s.name: s.phases(p, steps) for s in group}, task=TaskConfig(), model=group[0].model(),
              train=TrainConfig(log_every=250, checkpoint_every=steps), keep_checkpoints="ends")


def finals(out: Path, setting: Setting, p: int) -> tuple[list[float], list[float]] | None:
    """(train accs, test accs) of the setting's seeds at the last step, or None if not trained."""
    where = stage_dir(out, setting.shape, p, setting if p == 4 else None)
    if not (where / "summary.json").is_file():
        return None
    s = read_summary(where).get(setting.name)
    return (s.train_acc, s.test_acc) if s is not None else None


def count(values: list[float], threshold: float) -> int:
    return sum(v >= threshold for v in values)


def holds(values: list[float], threshold: float) -> bool:
    """At least SHARE of the seeds meet the threshold (3 of 4)."""
    return count(values, threshold) >= math.ceil(SHARE * len(values))


# %%
def run_pilot(out: Path, seeds: list[int], steps: tuple[int, int] = (STAGE1_STEPS, STAGE2_STEPS)) -> dict:
    grid = sorted(GRID, key=lambda s: s.cost)
    chosen = first_qualifying(out, grid, seeds, steps)
    if chosen is None:  # rule 3: widen before anything else
        grid.append(WIDER)
        chosen = first_qualifying(out, [WIDER], seeds, steps)
    return {"grid": grid, "chosen": chosen}


def first_qualifying(out: Path, grid: list[Setting], seeds: list[int], steps: tuple[int, int]) -> Setting | None:
    """Stage 1 for every setting of `grid`, then stage 2 cheapest first until one fits (None: none does)."""
    train_stage(out, grid, 2, steps[0], seeds)
    for setting in [s for s in grid if holds(finals(out, s, 2)[1], SOLVED)]:
        train_stage(out, [setting], 4, steps[1], seeds, each=True)
        if holds(finals(out, setting, 4)[0], FITS):
            return setting
    return None


def table(out: Path, grid: list[Setting]) -> list[str]:
    lines = [f"{'shape':12} {'setting':22} {'cost':>9}  p=2 test acc (seeds)        solved  "
             f"p=4 train acc (seeds)       fits  p=4 test acc"]
    for s in grid:
        p2, p4 = finals(out, s, 2), finals(out, s, 4)
        accs2 = " ".join(f"{a:.3f}" for a in p2[1]) if p2 else "-"
        solved = f"{count(p2[1], SOLVED)}/{len(p2[1])}" if p2 else "-"
        accs4 = " ".join(f"{a:.3f}" for a in p4[0]) if p4 else "not run"
        fits = f"{count(p4[0], FITS)}/{len(p4[0])}" if p4 else "-"
        test4 = " ".join(f"{a:.3f}" for a in p4[1]) if p4 else ""
        lines.append(f"{s.shape:12} {s.name:22} {s.cost:9d}  {accs2:27} {solved:6}  {accs4:27} {fits:4}  {test4}")
    return lines


# %%
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/transformer_pilot"))
    parser.add_argument("--seeds", default="0-3", help="N, N-M or a list (default 0-3: the rule counts 3 of 4)")
    parser.add_argument("--steps", default=f"{STAGE1_STEPS},{STAGE2_STEPS}",
                        help=f"steps of stage 1 (p = 2) and stage 2 (p = 4), default {STAGE1_STEPS},{STAGE2_STEPS}; "
                             "fewer only to try the script")
    args = parser.parse_args(argv)
    try:
        steps = tuple(int(n) for n in args.steps.split(","))
        assert len(steps) == 2 and min(steps) >= 1
    except (ValueError, AssertionError):
        parser.error(f"--steps takes two positive step counts, e.g. 8000,10000; got {args.steps!r}")
    try:
        seeds = parse_seeds(args.seeds)
    except CircuitPathError as error:
        parser.error(str(error))
    print(__doc__.split("\n\n")[1], flush=True)
    start = time.perf_counter()
    result = run_pilot(args.out, seeds, steps)
    lines = table(args.out, result["grid"])
    print(f"\npilot over seeds {args.seeds}: p = 2 for {steps[0]} steps, p = 4 for {steps[1]} "
          f"(took {time.perf_counter() - start:.0f} s here)")
    print("\n".join(lines))
    chosen = result["chosen"]
    print("study setting: " + (f"{chosen.shape} {chosen.name}" if chosen else
                              f"none qualifies, {WIDER.shape} included: say what was tried, and widen or lengthen next"))
    (args.out / "pilot.json").write_text(json.dumps({
        "stage1_steps": steps[0], "stage2_steps": steps[1], "seeds": seeds,
        "grid": [asdict(s) for s in result["grid"]], "chosen": asdict(chosen) if chosen else None,
        "table": lines}, indent=1))


if __name__ == "__main__":
    main()
