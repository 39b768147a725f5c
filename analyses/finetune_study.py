"""Why the d = 2 pipeline's p = 4 fine-tune fails: its start, and what a researcher would try, over seeds.

One p = 2 pretraining (`vis_p2`, n_tokens 4) per seed, shared by every fine-tune variant: each is a
branch at the end of the p = 2 phase (`circuitpath.paper.variants`), so all variants start from the same
weights. The notebook's own choice (n_tokens 3, a p = 3 fine-tune) needs its own pretraining (3
token rows) and is trained as one `vis_finetune` run per seed. A fine-tune *solves* its task when
train and test accuracy are >= 0.99 at its end, and *collapses* when its train accuracy is below
1/p + 0.05 (chance is 1/p). Rates over the same seeds, 95% Wilson intervals.

Run: `python analyses/finetune_study.py [OUT] [SEEDS]` (default runs/finetune_study and SEEDS 32: seeds 0-31).
"""

# %%
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from circuitpath.analysis.finetune_start import run_finetune_start
from circuitpath.analysis.stats import wilson_interval
from circuitpath.paper.presets import experiments
from circuitpath.paper.variants import FINETUNE_VARIANTS, make_variants
from circuitpath.runs import load_run
from circuitpath.training.train import train_groups
from common import Parser, script

SOLVED = 0.99
NOTEBOOK = "p=3, n_tokens 3 (FinetuneConfig default)"


# %%
def pretrain(out: Path, seeds: list[int]) -> None:
    """The shared p = 2 runs and the notebook's n_tokens 3 curriculum, trained together (skipped when done)."""
    p2 = experiments(vis_n_tokens=4)["vis_p2"]
    nb = experiments(vis_n_tokens=3, vis_finetune_p=3)["vis_finetune"]
    groups = [([e.config(s) for s in seeds], [out / name / f"seed_{s}" for s in seeds])
              for name, e in (("p2", p2), ("notebook", nb))]
    todo = [g for g in groups if not all((o / "run.json").is_file() for o in g[1])]
    if todo:
        train_groups(todo)


def branch_variants(out: Path, seeds: list[int]) -> None:
    """Every variant as branches of the p = 2 runs at their last step (skipped when done)."""
    for key, variant in FINETUNE_VARIANTS.items():
        todo = [s for s in seeds if not (out / key / f"seed_{s}" / "run.json").is_file()]
        if todo:
            make_variants([load_run(out / "p2" / f"seed_{s}") for s in todo], variant,
                          [out / key / f"seed_{s}" for s in todo])


# %%
def rate(hits: int, n: int) -> str:
    lo, hi = wilson_interval(hits, n)
    return f"{hits:2d}/{n} ({lo:.2f}-{hi:.2f})"


def outcome(run_dir: Path, p: int) -> tuple[bool, bool]:
    m = load_run(run_dir).final_metrics()
    return m["train_acc"] >= SOLVED and m["test_acc"] >= SOLVED, m["train_acc"] < 1 / p + 0.05


def pretrained(out: Path, seeds: list[int]) -> list[int]:
    """The seeds whose p = 2 pretraining solved p = 2 (train and test accuracy >= 0.99 at its end)."""
    metrics = {s: load_run(out / "p2" / f"seed_{s}").final_metrics() for s in seeds}
    return [s for s, m in metrics.items() if m["train_acc"] >= SOLVED and m["test_acc"] >= SOLVED]


def table(out: Path, seeds: list[int]) -> list[str]:
    good = pretrained(out, seeds)
    rows = [f"{'variant':44s} {'p solved (train & test >= 0.99)':>32s} {'collapsed (train < 1/p + 0.05)':>32s} "
            f"{'best train acc':>14s}  solved | p = 2 solved (seeds {', '.join(map(str, good))})"]
    dirs = {v.label: out / key for key, v in FINETUNE_VARIANTS.items()} | {NOTEBOOK: out / "notebook"}
    for name, root in dirs.items():
        p = 3 if name == NOTEBOOK else 4
        results = [outcome(root / f"seed_{s}", p) for s in seeds]
        best = max(load_run(root / f"seed_{s}").final_metrics()["train_acc"] for s in seeds)
        sub = sum(outcome(root / f"seed_{s}", p)[0] for s in good)
        rows.append(f"{name:44s} {rate(sum(r[0] for r in results), len(seeds)):>32s} "
                    f"{rate(sum(r[1] for r in results), len(seeds)):>32s} {best:>14.3f}  {rate(sub, len(good))}")
    return rows


def start_lines(out: Path, seeds: list[int]) -> list[str]:
    """The p = 4 fine-tune's start (baseline variant): loss, logit scale, the unused rows' norms."""
    starts = [run_finetune_start(load_run(out / "finetune" / f"seed_{s}")) for s in seeds]
    pre = [load_run(out / "p2" / f"seed_{s}").final_metrics() for s in seeds]
    ok = [m["train_acc"] >= SOLVED and m["test_acc"] >= SOLVED for m in pre]
    med = lambda xs: float(torch.tensor(xs).median())  # noqa: E731
    lines = [f"p = 2 pretraining solved (train & test >= 0.99 at its end): {rate(sum(ok), len(seeds))}",
             f"at the switch, median over seeds: loss {med([s.loss for s in starts]):.1f} (chance {starts[0].chance_loss:.2f}), "
             f"mean max |logit| {med([s.mean_max_abs_logit for s in starts]):.1f}"]
    for token in range(4):
        lines.append(f"  token {token}: |W_E| {med([s.rows[token].norm for s in starts]):.2f}, mean logit "
                     f"{med([s.rows[token].mean_logit for s in starts]):.1f}, loss of its targets "
                     f"{med([s.rows[token].target_loss for s in starts]):.1f}")
    return lines


def count(text: str) -> int:
    """SEEDS: a number N of seeds, 0..N-1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"is a number of seeds N >= 1 (seeds 0..N-1), got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/finetune_study"), metavar="OUT",
                        help="where the runs go (default runs/finetune_study); a second call only reads them")
    parser.add_argument("seeds", nargs="?", type=count, default=32, metavar="SEEDS",
                        help="a number N of seeds, 0..N-1 (default 32): 6 runs per seed")
    args = parser.parse_args(argv)
    out, seeds = args.out, list(range(args.seeds))
    pretrain(out, seeds)
    branch_variants(out, seeds)
    print(f"seeds {seeds[0]}-{seeds[-1]}; runs in {out}")
    print("\n".join(start_lines(out, seeds) + table(out, seeds)))


if __name__ == "__main__":
    script(main)
