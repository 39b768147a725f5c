"""`circuitpath reproduce`: the paper's figures in their own settings, each claim as a rate over seeds."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from circuitpath.config import RESIDUALS
from circuitpath.paper import presets

DESCRIPTION = """Train the experiments of the paper's figures (each in the setting its notebook used, see
circuitpath.paper.presets) on several seeds, batched; print every claim of the paper as the count of seeds where
it held, the rate and its Wilson 95% interval; write OUT/claims.json and OUT/report.html (the claims table,
then one section per figure, drawn on one seed chosen by a stated rule).

figures and their experiments:
  2  minibatch         T = 8, d = 32, mini-batches of 32, lr 1e-3, 150 epochs; the all-3s input update by update
  3  vis_finetune      the d = 2 pipeline's p = 2 phase (projects/visualization/train.py; also curriculum's at
                       d = 32): the 0s against the 1s, at the end of the p = 2 phase
  4  vis_finetune      d = 2, h = 32, batches of 32: p = 2 then the p = 4 fine-tune (finetune.py); 6 then 16 clusters
                       of z_A; vis_finetune_reset: the same fine-tune with the unseen token rows reset at the switch;
                       vis_scratch: p = 4 alone
  5  scratch           T = 12, d = 32, p = 4 for 10 000 steps at lr 1e-3; curriculum: p = 2 (3 000), then p = 4 (7 000)
                       (+ the circuit timeline: attribution patching at every checkpoint, scored against the truth)
  6  (scratch, curriculum) the loss barrier between the two solutions
  7  (scratch, curriculum) parameter trajectories

why lr 1e-3 from scratch: the notebook sets lr = 1e-3 and then overrides it with 1e-2; only 1e-3 draws
the paper's Fig. 5 curve (train acc ~0.95 at step 2 000, 0.99 at ~2 600; at 1e-2 it is 1.0 by step 1 250).
why more seeds at d = 2: the paper's Figs. 3-4 show one run among many, its p = 2 pretraining succeeds on a
minority of seeds, and a d = 2 run is cheap; those figures are drawn on the first seed whose pretraining
succeeded, and each of their claims is reported over all d = 2 seeds and over those (the _if_pretrained rows,
when any seed's pretraining succeeded).
why residual attn_out: the code that drew the figures adds the MLP to the un-normalised attention output
(a pre-norm block); the text's equation 4 adds it to RMS(z_A) (--residual normalized)."""

EPILOG = """examples:
  circuitpath reproduce                      # every figure, 8 seeds, into ./runs (about 8 min on 2 cores, measured: 477 s)
  circuitpath reproduce --seeds 1 --vis-seeds 1   # a quick tour: one seed of everything
  circuitpath reproduce --figures 4 --vis-seeds 8   # one figure, on 8 seeds of the d = 2 pipeline
  circuitpath reproduce --figures 2,4 --out runs/small
  circuitpath reproduce --residual normalized --out runs/eq4   # the text's equation 4 instead of the code's block"""


def _count(text: str) -> int:
    """A number of seeds N, which means seeds 0..N-1 (`sweep --seeds` takes a list instead)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"is a number of seeds N (seeds 0..N-1), got {text!r}") from None


def add_parsers(sub) -> None:
    parser = sub.add_parser("reproduce", help="the paper's figures in their settings; every claim as a rate over seeds",
                            description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs"), help="output directory (default ./runs)")
    parser.add_argument("--seeds", type=_count, default=8, metavar="N", help="train seeds 0..N-1 of every experiment but the d = 2 pipeline's (default 8)")
    parser.add_argument("--figures", default="all", help="comma-separated figure numbers among 2-7, or all (default)")
    parser.add_argument("--residual", default="attn_out", choices=sorted(RESIDUALS),
                        help="the MLP's residual: attn_out (the paper's code, which drew the figures; default) or normalized "
                        "(the text's equation 4)")
    parser.add_argument("--batch-size", type=int, default=32, help="mini-batch size of Fig. 2's run (default 32)")
    parser.add_argument("--vis-seeds", type=_count, default=presets.VIS_SEEDS, metavar="N",
                        help=f"train seeds 0..N-1 of the d = 2 pipeline, Figs. 3-4 (default {presets.VIS_SEEDS})")
    parser.add_argument("--vis-n-tokens", type=int, default=4,
                        help="embedding rows of the d = 2 pipeline (default 4; its scripts' grid has 3)")
    parser.add_argument("--vis-finetune-p", type=int, default=4,
                        help="modulus of the d = 2 pipeline's fine-tune (default 4, as the paper says; finetune.py: 3)")
    parser.add_argument("--scratch-lr", type=float, default=presets.SCRATCH_LR,
                        help=f"learning rate of the scratch run (default {presets.SCRATCH_LR:g}: of the notebook's two rates, "
                        "the one that draws the paper's Fig. 5 curve; see circuitpath.paper.presets)")
    parser.add_argument("--n", type=int, default=1024, help="test inputs probed by the report's analyses (default 1024)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--force", action="store_true", help="replace existing runs, claims and report in OUT")
    parser.set_defaults(handler=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from circuitpath.errors import ConfigError
    from circuitpath.paper.claims import per_seed_lines, table, tests_text
    from circuitpath.paper.reproduce import SHOWN_SEED_RULE, VIS_SEED_RULE, check, reproduce

    figures = presets.parse_figures(args.figures)
    presets.check_seed_count(args.seeds)
    if args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    experiments = presets.experiments(residual=args.residual, batch_size=args.batch_size, scratch_lr=args.scratch_lr,
                                      vis_n_tokens=args.vis_n_tokens, vis_finetune_p=args.vis_finetune_p)
    names = presets.needed(figures)
    if any(presets.is_vis(name) for name in names):
        presets.check_seed_count(args.vis_seeds, "--vis-seeds")
    seeds, vis_seeds = list(range(args.seeds)), list(range(args.vis_seeds))
    configs = check(args.out, experiments, figures, seeds, args.force, vis_seeds)
    count = sum(map(len, configs.values())) + len(presets.branches_needed(figures)) * len(vis_seeds)
    print(f"training {', '.join(names + presets.branches_needed(figures))} ({count} runs: {len(seeds)} "
          f"seed{'s' if len(seeds) > 1 else ''} each, {len(vis_seeds)} for the d = 2 pipeline) into {args.out}",
          file=sys.stderr)
    result = reproduce(args.out, experiments, figures, seeds, vis_seeds=vis_seeds, device=args.device,
                       force=args.force, n=args.n,
                       command="circuitpath " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:]
                       else "circuitpath reproduce")
    print(f"claims over seeds {seeds[0]}-{seeds[-1]}:" if len(seeds) > 1 else f"claims on seed {seeds[0]}:",
          f"(the d = 2 pipeline's over seeds 0-{len(vis_seeds) - 1})" if len(vis_seeds) > 1 and
          any(presets.is_vis(n) for n in names) else "")
    print(table(result.claims))
    print("what each claim measured:")
    print(tests_text(result.claims))
    print("per seed:")
    print("\n".join(per_seed_lines(result.claims)))
    if any(not presets.is_vis(name) for name in result.shown_seeds):
        print(f"figures drawn on seed {result.shown_seed}: {SHOWN_SEED_RULE}")
    vis_shown = sorted({s for name, s in result.shown_seeds.items() if presets.is_vis(name)})
    if vis_shown:
        print(f"d = 2 pipeline's figures (3-4) drawn on its seed {vis_shown[0]}: {VIS_SEED_RULE}")
    print("\n".join(result.headline_lines))
    print(f"claims written to {result.claims_path}")
    print(f"report written to {result.report_path}")
    print("wall time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.seconds.items()))
    return 0
