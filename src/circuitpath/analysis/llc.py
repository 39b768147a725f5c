"""The local learning coefficient (LLC) at a run's checkpoints, estimated with devinterp's SGLD sampler.

The LLC λ(w*) measures how many effective dimensions the loss landscape has around a solution w*
(Lau et al. 2023, "The local learning coefficient"). The estimator samples weights near w* from the
tempered, localised posterior exp(-nβ L_n(w) - γ/2 |w - w*|²) with SGLD, and reads

    λ̂(w*) = nβ · (E_w[L_n(w)] - L_n(w*)),

with E_w the mean mini-batch loss over every chain's draws after burn-in, and L_n(w*) the loss on
the whole training set at the checkpoint. The training set is the one of the phase the checkpoint
belongs to (p = 2 data during a curriculum's first phase).

devinterp (`pip install -e ".[llc]"`) supplies the sampler: its SGLD (`SGMCMC.sgld`, the update
Δw = ε/2 (nβ ∇L_m(w) + γ (w - w*)) + N(0, ε)) and its chain loop (`sample_single_chain`, a copy of
the model per chain, the same mini-batch order in every chain, a seed per chain). Its 2.x
high-level `llc()` is built for language models: it wants a HuggingFace dataset of next-token
sequences, writes every per-token loss to a Zarr store (~0.1 s a step here), and averages the
burn-in into the estimate. Our model predicts one token per sequence, so we call the chain loop
with our own loss and keep the traces in memory; the estimate follows the paper's definition
(draws after burn-in).

Settings (`LLCSettings`), stated in every result: SGLD step size ε = 1e-5, localisation γ = 1e4,
inverse temperature nβ = n / log n (n = 2048 training sequences: 268.6), 4 chains of 50 burn-in
steps and 200 draws, mini-batches of 256. Chosen on a memorised paper-size checkpoint (scratch,
seed 0, step 10 000, training loss 8e-6), 2 chains of 250 steps each: with γ = 100 the mean
mini-batch loss still climbed at the last draws for every ε from 1e-7 to 1e-5 (ε = 1e-5: 0.28 at the
end of burn-in, 0.60 at the end), and diverged from ε = 1e-4 (start 9.2) up; with γ = 1e4 and
ε = 1e-5 it levels off within burn-in (0.046 at its end, 0.056 at the end). These are starting points,
not universal values: traces (mini-batch loss at every SGLD step of every chain) come back for the
diagnostics figure, and a trace that climbs without levelling off, or a chain that diverges
(reported as NaN), means ε is too large or γ too small for that checkpoint.
"""

from __future__ import annotations

import functools
import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from circuitpath.errors import CircuitPathError, ConfigError
from circuitpath.models.model import CrossAttentionTransformer
from circuitpath.runs import ANALYSIS_DIR, Run, as_run
from circuitpath.runs.storage import read_json, write_atomic

LLC_JSON = "llc.json"
LLC_HTML = "llc.html"


class LLCUnavailable(CircuitPathError):
    """devinterp is not installed."""


@dataclass(frozen=True)
class LLCSettings:
    """The estimator's settings (Lau et al. 2023's SGLD with localisation)."""

    lr: float = 1e-5
    """SGLD step size ε."""
    localization: float = 1e4
    """γ, the pull of each sample back towards the checkpoint."""
    n_beta: float | None = None
    """Inverse temperature nβ; None: n / log n of the training set (β = 1 / log n, the usual choice)."""
    num_chains: int = 4
    num_draws: int = 200
    num_burnin_steps: int = 50
    batch_size: int = 256
    seed: int = 0
    """Seed of the mini-batch order (shared by the chains) and of chain c's noise (seed + c)."""

    def __post_init__(self) -> None:
        for name in ("lr", "localization"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if self.n_beta is not None and not (math.isfinite(self.n_beta) and self.n_beta > 0):
            raise ConfigError(f"n_beta must be a positive number, got {self.n_beta!r}")
        for name, low in (("num_chains", 1), ("num_draws", 1), ("num_burnin_steps", 0), ("batch_size", 1), ("seed", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")

    def resolved(self, n: int) -> LLCSettings:
        """These settings with nβ fixed for a training set of n sequences."""
        if self.batch_size > n:
            raise ConfigError(f"batch_size must be <= the training set's {n} sequences, got {self.batch_size}")
        return self if self.n_beta is not None else _replace(self, n_beta=n / math.log(n))


def _replace(settings: LLCSettings, **changes) -> LLCSettings:
    return LLCSettings(**(asdict(settings) | changes))


@dataclass
class LLCEstimate:
    """The LLC at one checkpoint, and its chains."""

    step: int
    llc: float  # mean over chains (NaN when a chain diverged)
    llc_std: float  # standard deviation over chains
    per_chain: list[float]
    init_loss: float  # L_n(w*), the whole training set's loss at the checkpoint
    trace: Tensor  # [chains, burn-in + draws] mini-batch loss at every SGLD step


@dataclass
class LLCOverTraining:
    """LLC estimates at several checkpoints of one run, with the settings that produced them."""

    run: str
    settings: LLCSettings
    estimates: list[LLCEstimate] = field(default_factory=list)
    phase_switches: list[int] = field(default_factory=list)

    @property
    def steps(self) -> list[int]:
        return [e.step for e in self.estimates]

    def at(self, step: int) -> LLCEstimate | None:
        return next((e for e in self.estimates if e.step == step), None)

    def lines(self) -> list[str]:
        s = self.settings
        lines = [f"LLC of {self.run}: SGLD lr {s.lr:g}, localization {s.localization:g}, n_beta {s.n_beta:.1f}, "
                 f"{s.num_chains} chains x ({s.num_burnin_steps} burn-in + {s.num_draws} draws), batch {s.batch_size}",
                 f"{'step':>7}  {'LLC':>9}  {'sd (chains)':>11}  {'L_n(w*)':>9}"]
        lines += [f"{e.step:>7}  {e.llc:>9.3f}  {e.llc_std:>11.3f}  {e.init_loss:>9.4f}" for e in self.estimates]
        return lines

    def to_dict(self) -> dict:
        return {"run": self.run, "settings": asdict(self.settings), "phase_switches": self.phase_switches,
                "estimator": "n_beta * (mean mini-batch loss over draws after burn-in - whole training set loss)",
                "estimates": [{"step": e.step, "llc": _finite(e.llc), "llc_std": _finite(e.llc_std),
                               "per_chain": [_finite(v) for v in e.per_chain], "init_loss": e.init_loss,
                               "trace": [[_finite(v) for v in row] for row in e.trace.tolist()]}
                              for e in self.estimates]}

    @classmethod
    def from_dict(cls, data: dict) -> LLCOverTraining:
        estimates = [LLCEstimate(e["step"], _nan(e["llc"]), _nan(e["llc_std"]), [_nan(v) for v in e["per_chain"]],
                                 e["init_loss"], torch.tensor([[_nan(v) for v in row] for row in e["trace"]]))
                     for e in data["estimates"]]
        return cls(data["run"], LLCSettings(**data["settings"]), estimates, data.get("phase_switches", []))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


# ---- the estimator -------------------------------------------------------------------------------
class _Pairs(torch.utils.data.Dataset):
    """(tokens, label) pairs as the dicts the chain loop feeds its `evaluate`."""

    def __init__(self, x: Tensor, y: Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"input_ids": self.x[index], "labels": self.y[index]}


class _Plain(nn.Module):
    """The model without its `cfg`: devinterp takes any module with `cfg.n_heads` for a TransformerLens
    HookedTransformer, whose `.to` has arguments an nn.Module's has not."""

    def __init__(self, model: CrossAttentionTransformer):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)


def _per_sequence_loss(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict]:
    labels = batch["labels"].to(batch["input_ids"].device)
    return F.cross_entropy(model(batch["input_ids"]), labels, reduction="none"), {}


@contextmanager
def _quiet_chains():
    """The chain loop draws one progress bar per chain; ours counts checkpoints instead."""
    import devinterp.slt.sampler as sampler

    original = sampler.trange
    sampler.trange = functools.partial(original, disable=True)
    try:
        yield
    finally:
        sampler.trange = original


@contextmanager
def _one_thread(device: str):
    """SGLD steps are small kernels (256 sequences, d = 32): on the CPU one thread runs them without the
    threads' hand-offs, which dominate on a busy machine (100 steps of a d = 8 model: 2.2 s against
    16.3 s with two threads, measured beside other jobs)."""
    threads = torch.get_num_threads()
    if str(device).startswith("cpu"):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _devinterp():
    try:
        from devinterp.optim import SGMCMC
        from devinterp.slt.sampler import sample_single_chain
    except ImportError as error:
        raise LLCUnavailable(f"the LLC needs devinterp ({error}); install it with: pip install -e \".[llc]\"") from None
    return SGMCMC, sample_single_chain


def estimate_llc(
    model: CrossAttentionTransformer,
    x: Int[Tensor, "n pos"],
    y: Int[Tensor, " n"],
    settings: LLCSettings = LLCSettings(),
    *,
    step: int = -1,
    device: str = "cpu",
) -> LLCEstimate:
    """λ̂ at the model's weights, on the training pairs (x, y)."""
    SGMCMC, sample_single_chain = _devinterp()
    settings = settings.resolved(len(x))
    model = model.to(device)
    with torch.no_grad():
        init_loss = float(F.cross_entropy(model(x.to(device)), y.to(device)))
    wrapped = _Plain(model).train()
    steps = settings.num_burnin_steps + settings.num_draws
    traces = torch.full((settings.num_chains, steps), float("nan"))

    def record(loss: Tensor, chain: int, step: int, **_) -> None:
        traces[chain, step] = float(loss.float().mean())

    with _quiet_chains(), _one_thread(device):
        for chain in range(settings.num_chains):
            sample_single_chain(
                ref_model=wrapped, dataset=_Pairs(x, y), evaluate=_per_sequence_loss,
                param_masks={name: None for name, _ in wrapped.named_parameters()},
                num_draws=settings.num_draws, num_burnin_steps=settings.num_burnin_steps,
                sampling_method=SGMCMC.sgld,
                sampling_method_kwargs={"lr": settings.lr, "localization": settings.localization,
                                        "nbeta": settings.n_beta},
                chain=chain, seed=settings.seed + chain, dataloader_seed=settings.seed, device=device,
                micro_callback=record, batch_size=settings.batch_size,
            )
    draws = traces[:, settings.num_burnin_steps:]
    per_chain = (settings.n_beta * (draws.mean(1) - init_loss)).tolist()  # NaN where a chain stopped early
    values = torch.tensor(per_chain)
    std = float(values.std()) if len(per_chain) > 1 else 0.0
    return LLCEstimate(step, float(values.mean()), std, per_chain, init_loss, traces)


def llc_over_training(run: Run, settings: LLCSettings = LLCSettings(), *, steps: list[int] | None = None,
                      device: str = "cpu", progress: bool = True) -> LLCOverTraining:
    """λ̂ at each of `steps` (default: every saved checkpoint), each on its phase's training set."""
    run = as_run(run)  # a Run, or its directory
    steps = run.steps if steps is None else steps
    for step in steps:
        run.checkpoint_path(step)  # every step is checked before the first estimate
    _devinterp()
    result = LLCOverTraining(str(run.path), settings.resolved(run.config.task.n_train),
                             phase_switches=run.phase_boundaries())
    for step in tqdm(steps, desc=f"LLC {run.path.name}", unit="checkpoint", disable=None if progress else True):
        split = run.data(run.phase_at(step))
        result.estimates.append(estimate_llc(run.model_at(step), split.x_train, split.y_train, settings, step=step,
                                             device=device))
    return result


def load_llc(run: Run) -> LLCOverTraining | None:
    """The estimates `circuitpath llc` saved in the run's analysis directory, if any."""
    path = run.path / ANALYSIS_DIR / LLC_JSON
    return LLCOverTraining.from_dict(read_json(path)) if path.is_file() else None


def merge_saved(result: LLCOverTraining, run: Run) -> LLCOverTraining:
    """The result joined with the estimates saved earlier at other steps under the same settings."""
    old = load_llc(run)
    if old is None or old.settings != result.settings:
        return result
    kept = [e for e in old.estimates if e.step not in set(result.steps)]
    return LLCOverTraining(result.run, result.settings, sorted(kept + result.estimates, key=lambda e: e.step),
                           result.phase_switches)


def save_llc(result: LLCOverTraining, run: Run) -> Path:
    """RUN/analysis/llc.json (pass `merge_saved(result, run)` to keep earlier steps; the page is drawn by
    `plots.llc.write_llc_page`)."""
    folder = run.path / ANALYSIS_DIR
    folder.mkdir(exist_ok=True)
    write_atomic(folder / LLC_JSON, (json.dumps(result.to_dict()) + "\n").encode())
    return folder / LLC_JSON


__all__ = ["LLCEstimate", "LLCOverTraining", "LLCSettings", "LLCUnavailable", "estimate_llc", "llc_over_training",
           "load_llc", "merge_saved", "save_llc"]
