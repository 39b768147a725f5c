"""Which runs will generalise? Predicting the final verdict from checkpoints early in training.

For every run of a group (a sweep's experiment, a switch step of `circuitpath switch`) and every
fraction x, the checkpoint saved at or just before x · total steps gives two sets of features:

- **circuit**: attention mass of the query on the relevant positions (the first k in the paper's task;
  features say "first k" there and "relevant" for other truths) and its largest share on one spurious
  position; accuracy lost when the relevant positions' values, or the spurious ones', are mean-ablated (`analysis.ablation`); the number of clusters of z_A (`analysis.clusters`); the
  Frobenius norm of each weight matrix; on a standard transformer the generic counterparts: the readout
  position's attention mass (and largest spurious share) per layer and head, named L{l}H{h}, the input
  positions' first residual stream ablated, the clusters of the last residual stream at the readout
  position, and the norm of every weight matrix (each weight of two or more axes); and the LLC where `circuitpath llc` saved it at that step for
  every run of the group. Measured on the first `n` test inputs of the phase the checkpoint belongs to.
- **loss** (the baseline): log10 of the training and test loss at that step.

The verdict is the final one: test acc >= 0.99. A logistic regression on standardised features
(scikit-learn) is scored by AUROC with repeated stratified k-fold: each repeat gives every run an
out-of-fold score, and the AUROC of those scores; the estimate is the mean over repeats. Its 95%
interval is a percentile bootstrap over runs (resampling runs with their repeat-averaged
out-of-fold scores), so it reflects how few seeds there are, which dominates at a few dozen runs.
Which features carry the prediction: each feature's own AUROC (0.5 = none; below 0.5, smaller values
go with generalising), and the standardised coefficients of the model fitted on every run.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from circuitpath.analysis.outcomes import GENERALISES, generalises
from circuitpath.errors import CircuitPathError, ConfigError
from circuitpath.runs import Run, load_run
from circuitpath.runs.storage import write_atomic
from circuitpath.training.branch import find_runs

PREDICTION_JSON = "prediction.json"
PREDICTION_HTML = "prediction.html"
WEIGHTS = ("W_E", "W_pos", "W_Q", "W_V", "W_in", "W_out")
LOSS_FEATURES = ("log10 train loss", "log10 test loss")


class PredictionError(CircuitPathError):
    """The runs cannot be cross-validated (too few of a class) or the input is not a set of runs."""


def parse_fractions(text: str) -> list[float]:
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ConfigError(f"fractions are comma-separated numbers in (0, 1], got {text!r}") from None
    if not values or values[0] <= 0 or values[-1] > 1:
        raise ConfigError(f"fractions must lie in (0, 1], got {text!r}")
    return values


# ---- features ------------------------------------------------------------------------------------
def step_at(run: Run, fraction: float) -> int:
    """The last checkpoint at or before `fraction` of the run's total steps."""
    limit = fraction * run.config.train.total_steps
    steps = [s for s in run.steps if s <= limit + 1e-9]
    if not steps:
        raise PredictionError(f"{run.path} has no checkpoint at or before step {limit:g}")
    return steps[-1]


@torch.no_grad()
def circuit_features(run: Run, step: int, n: int = 256) -> dict[str, float]:
    """The circuit features of one checkpoint (see the module docstring)."""
    from circuitpath.analysis.ablation import ablate, position_sets
    from circuitpath.analysis.clusters import default_activation, find_clusters
    from circuitpath.analysis.llc import load_llc
    from circuitpath.analysis.models import is_paper, readout_attention
    from circuitpath.data import at_positions, truth_name, truth_of

    phase = run.phase_at(step)
    split, model = run.data(phase), run.model_at(step)
    task, p = run.config.task, run.config.train.phases[phase].p
    truth = truth_of(task, run.config.train.phases[phase])
    label = truth_name(truth)
    x, y = split.x_test[:n], split.y_test[:n]
    if is_paper(model):  # the single query's pattern averaged as it always was (the same bytes in prediction.json)
        _, cache = model.run_with_cache(x, names_filter="blocks.0.attn.hook_pattern")
        patterns = cache["blocks.0.attn.hook_pattern"].mean(0)[None, None]
    else:
        patterns = readout_attention(model, x).mean(0)  # [layer, head_index, key_pos]
    sets = position_sets(truth, task.n_ctx)
    knocked = ablate(model, x, y, sets=sets, method="mean")
    drop = {name: knocked.base_accuracy - acc for name, acc in zip(knocked.names, knocked.accuracy.tolist())}
    features = {}
    for layer, head in itertools.product(*map(range, patterns.shape[:2])):
        pattern, at = patterns[layer, head, : task.n_ctx], "" if is_paper(model) else f"L{layer}H{head} "
        features[f"{at}attention on {label}"] = float(at_positions(pattern, truth).sum())
        features[f"{at}max spurious attention"] = (float(at_positions(pattern, truth, spurious=True).max())
                                                   if len(sets) > 1 else 0.0)
    activation = default_activation(run.config.model)
    features |= {
        f"acc lost, {label} ablated": drop[next(iter(sets))],
        "acc lost, spurious ablated": drop[list(sets)[1]] if len(sets) > 1 else 0.0,
        f"clusters of {activation}": float(find_clusters(model, x, p, truth, activation=activation).n_clusters),
    }
    weights = run.weights_at(step)
    names = WEIGHTS if is_paper(model) else [name for name, value in weights.items() if value.ndim >= 2]
    features |= {f"|{name}|": float(weights[name].norm()) for name in names}
    saved = load_llc(run)
    estimate = saved.at(step) if saved is not None else None
    if estimate is not None and math.isfinite(estimate.llc):
        features["LLC"] = estimate.llc
    return features


def loss_features(run: Run, step: int) -> dict[str, float]:
    phase = run.phase_at(step)
    line = next((m for m in run.metrics if m["step"] == step and m["phase"] == phase), None)
    if line is None:
        raise PredictionError(f"{run.path} has no metrics at step {step}")
    return {"log10 train loss": math.log10(max(line["train_loss"], 1e-12)),
            "log10 test loss": math.log10(max(line["test_loss"], 1e-12))}


# ---- cross-validated AUROC -----------------------------------------------------------------------
@dataclass
class Score:
    """AUROC of one feature set at one fraction."""

    features: list[str]
    auroc: float  # mean over repeats of the out-of-fold AUROC
    interval: tuple[float, float]  # 95% bootstrap over runs of that mean
    per_feature_auroc: dict[str, float]
    coefficients: dict[str, float]  # standardised, fitted on every run

    def text(self) -> str:
        return f"{self.auroc:.2f} [{self.interval[0]:.2f}, {self.interval[1]:.2f}]"

    def to_dict(self) -> dict:
        return {"features": self.features, "auroc": self.auroc, "auroc_95": list(self.interval),
                "per_feature_auroc": self.per_feature_auroc, "standardised_coefficients": self.coefficients}


def cross_validated_auroc(X: np.ndarray, y: np.ndarray, names: list[str], *, folds: int = 5, repeats: int = 20,
                          bootstrap: int = 2000, seed: int = 0) -> Score:
    """Repeated stratified k-fold AUROC of a standardised logistic regression, with a bootstrap interval."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import RepeatedStratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model():
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))

    minority = int(min(y.sum(), len(y) - y.sum()))
    folds = min(folds, minority)
    if folds < 2:
        raise PredictionError(f"too few runs to cross-validate: {int(y.sum())} generalise and {len(y) - int(y.sum())} "
                              "do not; each class needs at least 2")
    scores = np.zeros((repeats, len(y)))
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for index, (train, test) in enumerate(splitter.split(X, y)):
        fitted = model().fit(X[train], y[train])
        scores[index // folds, test] = fitted.predict_proba(X[test])[:, 1]
    auroc = float(np.mean([roc_auc_score(y, row) for row in scores]))
    picks = np.random.default_rng(seed).integers(0, len(y), (bootstrap, len(y)))
    picks = picks[(y[picks].sum(1) > 0) & (y[picks].sum(1) < len(y))]  # a resample needs both classes
    # the same statistic on each resample of runs: the mean over repeats of each repeat's AUROC
    resampled = auroc_rows(np.tile(y[picks], (repeats, 1)), scores[:, picks].reshape(-1, len(y)))
    low, high = np.percentile(resampled.reshape(repeats, -1).mean(0), [2.5, 97.5])
    fitted = model().fit(X, y)
    coefficients = dict(zip(names, fitted[-1].coef_[0].tolist()))
    per_feature = {name: float(roc_auc_score(y, X[:, i])) if np.ptp(X[:, i]) > 0 else 0.5 for i, name in enumerate(names)}
    return Score(list(names), auroc, (float(low), float(high)), per_feature, coefficients)


def auroc_rows(y: Int[np.ndarray, "b n"], score: Float[np.ndarray, "b n"]) -> Float[np.ndarray, " b"]:
    """AUROC of every row at once (the Mann-Whitney form, ties counted half): what `roc_auc_score` gives
    row by row, fast enough for thousands of bootstrap resamples. Every row needs both classes."""
    from scipy.stats import rankdata

    positives = y.sum(1)
    ranks = rankdata(score, axis=1)
    return ((ranks * y).sum(1) - positives * (positives + 1) / 2) / (positives * (y.shape[1] - positives))


# ---- the whole prediction ------------------------------------------------------------------------
@dataclass
class FractionResult:
    fraction: float
    steps: list[int]  # the checkpoint used for each run
    circuit: Score
    loss: Score


@dataclass
class GroupPrediction:
    name: str
    runs: list[str]
    generalised: list[bool]
    fractions: list[FractionResult] = field(default_factory=list)
    features: dict[float, list[dict[str, float]]] = field(default_factory=dict)  # per fraction, per run


@dataclass
class PredictionResult:
    root: str
    groups: list[GroupPrediction]
    skipped: dict[str, str]  # group -> why it could not be cross-validated
    settings: dict

    def lines(self) -> list[str]:
        lines = [f"predicting '{GENERALISES}' at the end of training; AUROC mean over {self.settings['repeats']} "
                 f"repeats of stratified {self.settings['folds']}-fold, [95% bootstrap over runs]"]
        header = f"{'group':<16} {'x':>5} {'step':>6} {'runs (gen.)':>11}  {'circuit AUROC':<19}  {'loss AUROC':<19}  strongest circuit features (own AUROC)"
        lines += [header, "-" * len(header)]
        for group in self.groups:
            positives = sum(group.generalised)
            for f in group.fractions:
                strongest = sorted(f.circuit.per_feature_auroc.items(), key=lambda kv: -abs(kv[1] - 0.5))[:3]
                steps = sorted(set(f.steps))
                step = str(steps[0]) if len(steps) == 1 else f"{steps[0]}+"
                lines.append(f"{group.name:<16} {f.fraction:>5.2f} {step:>6} {len(group.runs):>5} ({positives:>3})  "
                             f"{f.circuit.text():<19}  {f.loss.text():<19}  "
                             + ", ".join(f"{name} {value:.2f}" for name, value in strongest))
        lines += [f"{name}: skipped ({why})" for name, why in self.skipped.items()]
        return lines

    def to_dict(self) -> dict:
        return {"root": self.root, "criterion": GENERALISES, "settings": self.settings, "skipped": self.skipped,
                "groups": [{"name": g.name, "runs": g.runs, "generalised": g.generalised,
                            "fractions": [{"fraction": f.fraction, "steps": f.steps, "circuit": f.circuit.to_dict(),
                                           "loss": f.loss.to_dict(), "features": g.features[f.fraction]}
                                          for f in g.fractions]} for g in self.groups]}


def group_runs(root: str | Path, pool: bool = False) -> dict[str, list[Path]]:
    """Runs by group: the relative folder that holds them (a sweep's experiment, a switch step)."""
    root = Path(root)
    paths = find_runs(root)
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        name = "." if path == root else str(path.parent.relative_to(root)) or "."
        if (root / "switch.json").is_file() and name == "p2":
            continue  # the p = 2 runs of a switch experiment are the branches' parents, not outcomes
        groups["all" if pool else name].append(path)
    return dict(groups)


def predict_outcomes(root: str | Path, fractions: list[float], *, repeats: int = 20, folds: int = 5, n: int = 256,
                     pool: bool = False, progress: bool = True) -> PredictionResult:
    """Cross-validated AUROC of the circuit features and of the losses, per group and fraction."""
    if repeats < 1 or folds < 2:
        raise ConfigError(f"repeats must be >= 1 and folds >= 2, got {repeats} and {folds}")
    groups, skipped = [], {}
    for name, paths in group_runs(root, pool).items():
        runs = [load_run(p) for p in paths]
        unfinished = [r.path for r in runs if r.status != "completed"]
        if unfinished:
            skipped[name] = f"{len(unfinished)} runs not completed, e.g. {unfinished[0]}"
            continue
        verdicts = [generalises(r.final_metrics()) for r in runs]
        positives = sum(verdicts)
        if min(positives, len(runs) - positives) < 2:
            skipped[name] = f"{positives} of {len(runs)} runs generalise; each class needs at least 2"
            continue
        groups.append(_predict_group(name, runs, verdicts, fractions, repeats, folds, n, progress))
    if not groups:
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        raise PredictionError(f"no group of runs in {root} can be cross-validated ({why})")
    return PredictionResult(str(root), groups, skipped, {"fractions": fractions, "repeats": repeats, "folds": folds,
                                                         "n": n, "pool": pool})


def _predict_group(name, runs, verdicts, fractions, repeats, folds, n, progress) -> GroupPrediction:
    group = GroupPrediction(name, [str(r.path) for r in runs], verdicts)
    y = np.array(verdicts, dtype=int)
    with tqdm(total=len(runs) * len(fractions), desc=f"features {name}", unit="checkpoint",
              disable=None if progress else True) as bar:
        for fraction in fractions:
            steps = [step_at(run, fraction) for run in runs]
            rows = []
            for run, step in zip(runs, steps):
                rows.append(circuit_features(run, step, n) | loss_features(run, step))
                bar.update(1)
            circuit = [k for k in rows[0] if k not in LOSS_FEATURES and all(k in row for row in rows)]
            group.features[fraction] = rows
            group.fractions.append(FractionResult(
                fraction, steps,
                cross_validated_auroc(np.array([[row[k] for k in circuit] for row in rows]), y, circuit,
                                      folds=folds, repeats=repeats),
                cross_validated_auroc(np.array([[row[k] for k in LOSS_FEATURES] for row in rows]), y,
                                      list(LOSS_FEATURES), folds=folds, repeats=repeats)))
    return group


def save_prediction(result: PredictionResult, out: str | Path) -> Path:
    """prediction.json in `out` (its page is drawn by `plots.prediction.write_prediction_page`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / PREDICTION_JSON, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return out / PREDICTION_JSON


__all__ = ["PredictionError", "PredictionResult", "auroc_rows", "circuit_features", "cross_validated_auroc",
           "loss_features", "parse_fractions", "predict_outcomes", "save_prediction", "step_at"]
