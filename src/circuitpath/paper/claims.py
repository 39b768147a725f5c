"""The paper's claims as measured numbers: per seed a value and a verdict, over seeds a rate.

Each `Claim` holds one sentence of the paper, the number that tests it, the rule that turns the
number into a verdict for one seed, and the seeds' values. Over seeds it reports the count of seeds
where the claim held, the rate and its Wilson 95% interval. The thresholds are stated here once;
none was chosen after seeing results.

A claim is *supported* when the whole 95% interval of its rate lies above 1/2, *refuted* when it
lies below 1/2, and *mixed* otherwise (with 8 seeds: supported from 7/8 on, refuted up to 1/8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable


from circuitpath.analysis.barrier import run_barrier
from circuitpath.analysis.clusters import FITS_ARI, find_clusters
from circuitpath.analysis.outcomes import FITS, GENERALISES_AT, MEMORISED_BELOW, generalises, memorises
from circuitpath.analysis.stats import Rate
from circuitpath.analysis.threads import single_threaded
from circuitpath.paper.probes import attention_at, constant_inputs, first_k_inputs, token_focus, update_changes
from circuitpath.paper.variants import switch_step
from circuitpath.runs import Run

# ---- thresholds, stated once -------------------------------------------------------------------
# A run fits its training set, generalises and memorises as `experiments` says (FITS, GENERALISES_AT,
# MEMORISED_BELOW: 0.99, 0.99, 0.5).
SPURIOUS_PRUNED = 0.05
"""Spurious positions are pruned when their total attention is below this (uniform: (T - k) / T)."""
ZERO_FOCUS = 2.0
"""The attention "focuses on the 0s" when a 0 among the first k gets at least this many times a 1's."""
CLUSTER_ARI = FITS_ARI
"""Clusters encode a labeling when their adjusted Rand index with it is at least this."""
BARRIER = math.log(4)
"""A barrier is high when the path's training loss rises above its ends by more than a uniform guess's loss."""
PROBES = 1024
"""Test inputs probed per seed (Fig. 3)."""
BARRIER_POINTS = 11
"""Points on the straight line between two solutions (both ends included)."""
#: How the seed whose figures are drawn is chosen.
SHOWN_SEED_RULE = ("the first seed where both halves of the headline hold (scratch memorises and the curriculum "
                   "generalises); the first seed when none does, or when Fig. 5 is not drawn")
#: The same for the d = 2 pipeline's figures (3 and 4), drawn on one of their own seeds.
VIS_SEED_RULE = ("the first d = 2 seed whose p = 2 pretraining succeeded (vis_p2_solved); the first d = 2 seed "
                 "when none did")
@dataclass
class Claim:
    """One claim of the paper, measured on several seeds."""

    key: str
    figure: int
    paper: str  # the paper's sentence
    test: str  # the number measured and the rule that makes a seed hold
    values: dict[int, float] = field(default_factory=dict)  # seed -> the number
    holds: dict[int, bool] = field(default_factory=dict)
    shown: dict[int, str] = field(default_factory=dict)  # seed -> the number as printed

    def add(self, seed: int, value: float, holds: bool, shown: str | None = None) -> None:
        self.values[seed], self.holds[seed] = float(value), bool(holds)
        self.shown[seed] = shown if shown is not None else f"{value:.3g}"

    @property
    def n(self) -> int:
        return len(self.holds)

    @property
    def count(self) -> int:
        return sum(self.holds.values())

    @property
    def rate(self) -> float:
        return Rate(self.count, self.n).rate

    @property
    def interval(self) -> tuple[float, float]:
        return Rate(self.count, self.n).interval

    @property
    def seeds_holding(self) -> list[int]:
        return sorted(seed for seed, ok in self.holds.items() if ok)

    @property
    def verdict(self) -> str:
        low, high = self.interval
        return "supported" if low > 0.5 else "refuted" if high < 0.5 else "mixed"

    def to_dict(self) -> dict:
        low, high = self.interval
        return {"key": self.key, "figure": self.figure, "paper": self.paper, "test": self.test,
                "count": self.count, "n": self.n, "rate": self.rate, "ci95": [low, high], "verdict": self.verdict,
                "seeds_holding": self.seeds_holding,
                "per_seed": {str(s): {"value": self.values[s], "holds": self.holds[s], "shown": self.shown[s]}
                             for s in sorted(self.values)}}

    @classmethod
    def from_dict(cls, data: dict) -> "Claim":
        """The claim `to_dict` wrote (its counts, rate and verdict follow from the per-seed values)."""
        claim = cls(data["key"], data["figure"], data["paper"], data["test"])
        for seed, row in data["per_seed"].items():
            claim.add(int(seed), row["value"], row["holds"], row["shown"])
        return claim


Runs = dict[int, Run]  # seed -> run


def _final(run: Run) -> dict:
    return run.final_metrics()


def _at_switch(run: Run) -> dict:
    """The metrics line that closes the first phase (logged at the switch step, phase 0)."""
    switch = run.config.train.phase_starts()[1]
    lines = [m for m in run.metrics if m["step"] == switch and m["phase"] == 0]
    return lines[-1] if lines else {}


# ---- Fig. 2 --------------------------------------------------------------------------------------
def fig2(runs: Runs) -> list[Claim]:
    """Spurious attention grows in some first-epoch updates, and is pruned at the end (all-3s input)."""
    some = Claim("spurious_updates", 2, "At the first epochs, among the 64 batches of size 32, some [updates] "
                 "reinforce the 3 [spurious] tokens.",
                 "fraction of the first epoch's updates that increase the attention on at least one spurious "
                 "position of the all-3s input; holds if at least one does")
    focus = Claim("first_epoch_focus", 2, "Meanwhile, the updates tend to push the right attention scores, "
                  "augmenting the focus on the first five tokens.",
                  "attention mass on the first k of the all-3s input after the first epoch minus before it; "
                  "holds if positive")
    pruned = Claim("spurious_pruned", 2, "The non-spurious part ultimately becomes dominant, while the "
                   "spurious circuits get pruned in the last profile.",
                   f"final attention mass on the spurious positions of the all-3s input; holds if below {SPURIOUS_PRUNED}")
    for seed, run in runs.items():
        epoch = _first_epoch(run)
        tokens = constant_inputs(run.config.train.phases[0].p, run.config.task.n_ctx)[-1]
        changes = update_changes(run, epoch, tokens)
        fraction = changes.spurious_increased.float().mean().item()
        some.add(seed, fraction, fraction > 0, f"{changes.spurious_increased.sum().item()}/{len(epoch) - 1}")
        gain = (changes.first_k_mass[-1] - changes.first_k_mass[0]).item()
        focus.add(seed, gain, gain > 0, f"{gain:+.3f}")
        final = update_changes(run, [run.steps[-1]], tokens).spurious_mass[0].item()
        pruned.add(seed, final, final < SPURIOUS_PRUNED, f"{final:.3f}")
    return [some, focus, pruned]


def _first_epoch(run: Run) -> list[int]:
    """Checkpoints 0, 1, ..., one epoch of updates (every update must have been saved)."""
    phase = run.config.train.phases[0]
    per_epoch = run.config.task.n_train // (phase.batch_size or run.config.task.n_train)
    steps = list(range(min(per_epoch, phase.steps) + 1))
    missing = sorted(set(steps) - set(run.steps))
    if missing:
        from circuitpath.errors import CheckpointError

        raise CheckpointError(f"{run.path} lacks the first epoch's checkpoints (e.g. step {missing[0]}); "
                              "Fig. 2 needs one after every update")
    return steps


# ---- Fig. 3 --------------------------------------------------------------------------------------
def fig3(runs: Runs, key: str = "focus_on_zeros", where: str = "") -> list[Claim]:
    """At the end of the p = 2 phase the query attends to the 0s among the first k."""
    claim = Claim(key, 3, "It focuses on the 0 among these tokens, before counting them.",
                  f"{where}at the end of the p = 2 phase, mean attention on a first-k position holding 0 over one "
                  f"holding 1 (p = 2 test inputs with both); holds if at least {ZERO_FOCUS:g}")
    for seed, run in runs.items():
        tokens = run.data(0).x_test[:PROBES]
        focus = token_focus(attention_at(run, [switch_step(run)], tokens)[0], tokens, run.config.task.k)
        claim.add(seed, focus.ratio, focus.ratio >= ZERO_FOCUS,
                  f"{focus.ratio:.2f} ({focus.on_zero:.3f} / {focus.on_one:.3f})")
    return [claim]


# ---- Fig. 4 --------------------------------------------------------------------------------------
def clusters_on_paper_inputs(run: Run, step: int, p: int):
    """Clusters of z_A on Fig. 4's inputs (every first k in F_p^k, spurious tokens 0), counted by the
    rule of `analysis.clusters` (1 when no group stands out from a structureless cloud)."""
    task = run.config.task
    with single_threaded():  # k-means on a few hundred points: extra threads only wait
        return find_clusters(run.model_at(step), first_k_inputs(p, task.k, task.n_ctx), p, task.k)


def _cluster_claim(claim: Claim, seed: int, found, expected: int, present: bool = True) -> None:
    ari = found.alignment["sum of first k"]
    formed = found.n_clusters == expected and ari >= CLUSTER_ARI
    claim.add(seed, found.n_clusters, formed == present, f"{found.n_clusters} (ARI {ari:.2f})")


CLUSTER_RULE = f"{{}} clusters of z_A and adjusted Rand index >= {CLUSTER_ARI} with the sum of the first k"


def fig4(finetune: Runs, reset: Runs, scratch: Runs) -> list[Claim]:
    """z_A forms k + 1 = 6 clusters after p = 2 and 16 after the p = 4 fine-tune, which p = 4 alone does not
    form (d = 2); the fine-tune as finetune.py runs it, and with the unseen token rows reset at the switch.
    Every claim but the scratch one also over the seeds whose pretraining succeeded."""
    solved = pretraining("vis_p2_solved", 4, finetune, "d = 2 pipeline's")
    six = Claim("clusters_p2", 4, "After pretraining with p = 2, we observe the emergence of equivalence classes "
                "modulo 6.", "on the 32 inputs with first k in {0,1}^5 (spurious 0) at the switch: holds with "
                + CLUSTER_RULE.format(6))
    for seed, run in finetune.items():
        _cluster_claim(six, seed, clusters_on_paper_inputs(run, switch_step(run), run.config.train.phases[0].p), 6)
    fine_tunes = [c for runs, suffix, how in ((finetune, "", "finetune.py's fine-tune"),
                                               (reset, "_reset", "the fine-tune with unseen token rows reset"))
                  for c in _finetune_claims(runs, suffix, how)]
    alone = Claim("clusters_scratch", 4, "Such a structure could not emerge from p = 4 only on the considered "
                  "model size (d = 2).", "the same inputs, d = 2 trained on p = 4 alone: holds unless "
                  + CLUSTER_RULE.format(16))
    for seed, run in scratch.items():
        _cluster_claim(alone, seed, clusters_on_paper_inputs(run, run.steps[-1], run.config.train.phases[-1].p), 16,
                       present=False)
    good = solved.seeds_holding
    return [c for c in [solved] + [c for claim in (six, *fine_tunes) for c in (claim, among(claim, good))] + [alone]
            if c.n]


def _finetune_claims(runs: Runs, suffix: str, how: str) -> list[Claim]:
    """16 clusters at the end of a fine-tune, and whether it solved p = 4."""
    sixteen = Claim("clusters_p4" + suffix, 4, "After finetuning with p = 4, equivalence classes modulo 16 appear.",
                    f"{how}: on the 1 024 inputs with first k in {{0..3}}^5 (spurious 0) at the end: holds with "
                    + CLUSTER_RULE.format(16))
    solved = Claim("finetune_solved" + suffix, 4, "[The curriculum] eases the optimization path [...] finetuning "
                   "with p = 4.", f"{how}: final train and test acc >= {GENERALISES_AT} on p = 4")
    for seed, run in runs.items():
        _cluster_claim(sixteen, seed, clusters_on_paper_inputs(run, run.steps[-1], run.config.train.phases[-1].p), 16)
        m = _final(run)
        ok = m["train_acc"] >= GENERALISES_AT and m["test_acc"] >= GENERALISES_AT
        solved.add(seed, m["test_acc"], ok, f"train {m['train_acc']:.3f}, test {m['test_acc']:.3f}")
    return [sixteen, solved]


#: Suffix of a claim measured again over the seeds whose p = 2 pretraining succeeded.
PRETRAINED = "_if_pretrained"


def among(claim: Claim, seeds: list[int]) -> Claim:
    """`claim` over `seeds` only: the d = 2 figures' claims once more, where the pretraining succeeded
    (left out of the claims when no seed's did)."""
    sub = Claim(claim.key + PRETRAINED, claim.figure, claim.paper,
                claim.test + "; over the seeds whose p = 2 pretraining succeeded (vis_p2_solved)")
    for seed in (s for s in seeds if s in claim.values):
        sub.add(seed, claim.values[seed], claim.holds[seed], claim.shown[seed])
    return sub


# ---- Figs. 5 and 6 -------------------------------------------------------------------------------
def fig5(scratch: Runs, curriculum: Runs) -> list[Claim]:
    """Scratch memorises, the curriculum generalises, both on one seed; and the p = 2 phase's own outcome."""
    mem = Claim("scratch_memorises", 5, "Training from scratch leads to networks that memorize their training "
                "sets but do not generalize to our testing set.",
                f"final train acc >= {FITS} and test acc < {MEMORISED_BELOW} (scratch, p = 4)")
    gen = Claim("curriculum_generalises", 5, "If we first train the network with parity data [...] gradient descent "
                "easily finds a circuit that can generalize.", f"final test acc >= {GENERALISES_AT} (curriculum)")
    both = Claim("headline", 5, "A carefully chosen curriculum instils the right circuits: scratch memorises where "
                 "the curriculum generalises.", "both of the above on the same seed")
    p2 = pretraining("p2_solved", 5, curriculum, "curriculum's")
    for seed, run in scratch.items():
        m = _final(run)
        mem.add(seed, m["test_acc"], memorises(m), f"train {m['train_acc']:.3f}, test {m['test_acc']:.3f}")
    for seed, run in curriculum.items():
        m = _final(run)
        gen.add(seed, m["test_acc"], generalises(m), f"test {m['test_acc']:.3f}")
        if seed in scratch:
            ok = memorises(_final(scratch[seed])) and generalises(m)
            both.add(seed, float(ok), ok, "yes" if ok else "no")
    return [c for c in (mem, gen, both, p2) if c.n]


def pretraining(key: str, figure: int, curriculum: Runs, whose: str) -> Claim:
    """The p = 2 phase's own outcome at the switch: a failed curriculum says whether its pretraining failed."""
    claim = Claim(key, figure, "Trained on p = 2, the first attention layer implements an addition modulo k + 1.",
                  f"{whose} test acc on p = 2 at the switch >= {GENERALISES_AT} (did its pretraining succeed?)")
    for seed, run in curriculum.items():
        s = _at_switch(run)
        claim.add(seed, s.get("test_acc", float("nan")), bool(s) and generalises(s),
                  f"train {s.get('train_acc', float('nan')):.3f}, test {s.get('test_acc', float('nan')):.3f}")
    return claim


def fig6(scratch: Runs, curriculum: Runs) -> list[Claim]:
    """A high loss barrier separates the scratch and curriculum solutions."""
    claim = Claim("barrier", 6, "A high loss barrier separat[es] the two models [...] the model trained from scratch "
                  "fails at leaving its local minimum.",
                  f"train-loss barrier on the straight line between the final weights; holds if above ln 4 = {BARRIER:.3f}")
    for seed in sorted(set(scratch) & set(curriculum)):
        height = run_barrier(scratch[seed], curriculum[seed], points=BARRIER_POINTS).height
        claim.add(seed, height, height > BARRIER, f"{height:.3f}")
    return [claim]


#: How each figure's claims are measured from the runs of its experiments (by experiment name, then seed).
MEASURES: dict[int, Callable[[dict[str, Runs]], list[Claim]]] = {
    2: lambda runs: fig2(runs["minibatch"]),
    3: lambda runs: _with_pretrained(fig3(runs["vis_finetune"], where="d = 2 (the figure's pipeline), "),
                                     runs["vis_finetune"])
    + fig3(runs["curriculum"], "focus_on_zeros_d32", "d = 32 (Fig. 5's curriculum), "),
    4: lambda runs: fig4(runs["vis_finetune"], runs["vis_finetune_reset"], runs["vis_scratch"]),
    5: lambda runs: fig5(runs["scratch"], runs["curriculum"]),
    6: lambda runs: fig6(runs["scratch"], runs["curriculum"]),
    7: lambda runs: [],  # Fig. 7 illustrates the two paths; the paper draws no claim from it beyond Fig. 6's
}


def _with_pretrained(claims: list[Claim], pretrained: Runs) -> list[Claim]:
    """Each claim, then the same over the seeds whose p = 2 phase (of the `pretrained` runs) succeeded."""
    good = pretraining("vis_p2_solved", 0, pretrained, "").seeds_holding
    return [c for claim in claims for c in (claim, among(claim, good)) if c.n]


def measure(figures: list[int], runs: dict[str, Runs]) -> list[Claim]:
    """Every claim of the given figures, measured on every seed."""
    return [claim for number in figures for claim in MEASURES[number](runs)]


# ---- printing --------------------------------------------------------------------------------------
def table(claims: list[Claim]) -> str:
    """The claims as an aligned text table: figure, claim, count, rate, 95% interval, verdict, seeds holding."""
    rows = [("fig", "claim", "holds", "rate", "95% interval", "verdict", "seeds holding")]
    for c in claims:
        low, high = c.interval
        rows.append((str(c.figure), c.key, f"{c.count}/{c.n}", f"{c.rate:.0%}", f"[{low:.0%}, {high:.0%}]",
                     c.verdict, ", ".join(map(str, c.seeds_holding)) or "none"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def tests_text(claims: list[Claim]) -> str:
    """One line per claim: what was measured and the rule."""
    return "\n".join(f"  {c.key}: {c.test}" for c in claims)


def per_seed_lines(claims: list[Claim]) -> list[str]:
    """Each claim's value on each seed, for the record."""
    return [f"  {c.key}: " + "; ".join(f"seed {s} {c.shown[s]}{'' if c.holds[s] else ' (no)'}" for s in sorted(c.shown))
            for c in claims]


__all__ = ["Claim", "MEASURES", "measure", "table"]
