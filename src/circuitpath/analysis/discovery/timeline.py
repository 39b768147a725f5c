"""Every discovery method at every checkpoint of a run, scored against the truth, saved beside the run.

Each checkpoint is probed with the first n test inputs of the phase it belongs to (its task's
labels), corrupted by a fixed reordering of the same inputs. Results go to RUN/analysis/discovery/:
`timeline.json` (per step and method: AUROC, precision@k, position scores, faithfulness, the first
step reaching AUROC >= 0.99), `scores.safetensors` (every site's score) and `circuits/` (one JSON per
method and step; the command line adds an SVG of each).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from circuitpath.analysis.ablation import METHODS as ABLATIONS
from circuitpath.analysis.discovery.graph import ModelGraph, site_activations
from circuitpath.analysis.discovery.methods import DIFFERENTIABLE, METHODS, Probe, ProbeRuns, SiteScores, score_sites
from circuitpath.analysis.discovery.prune import DiscoveredCircuit, check_rule, greedy, prune
from circuitpath.analysis.discovery.truth import (auroc, faithfulness, faithfulness_counts, first_reaching, precision_at_k,
                                                  reaching_text, stays_from)
from circuitpath.analysis.models import require_paper
from circuitpath.analysis.threads import single_threaded
from circuitpath.data import relevant_mask
from circuitpath.errors import CheckpointError, ConfigError, InputError, RunError
from circuitpath.runs import ANALYSIS_DIR, DATA_DIR, Run, as_run, data_file
from circuitpath.runs.storage import load_tensors, read_json, save_tensors, write_json

DISCOVERY_DIR = "discovery"
TIMELINE_JSON, SCORES = "timeline.json", "scores.safetensors"
LEVEL = 0.99  # the AUROC a method must reach to count as having found the circuit


@dataclass(frozen=True)
class DiscoveryConfig:
    """What `discover` runs at each checkpoint."""

    methods: tuple[str, ...] = METHODS
    """Any of attribution, patching, ablation."""
    n: int = 1024
    """Test inputs probed at each checkpoint."""
    metric: str = "logit_diff"
    """What attribution and activation patching measure: logit_diff or loss (ablation: always the loss)."""
    ig_steps: int = 0
    """0: plain attribution patching; m >= 1: integrated gradients over m points (EAP-IG)."""
    ablation: str = "mean"
    """How the ablation method knocks a site out: zero, mean or resample."""
    rule: str = "budgets"
    """How a circuit is pruned from the scores: budgets, top-n, threshold or acdc."""
    parameter: float | None = None
    """The rule's parameter: share of the largest position kept (budgets, 0.1), nodes kept (top-n, 16), fraction of the largest score (threshold, 0.1),
    KL increase allowed per removed edge (acdc, 0.01)."""
    seed: int = 0
    """Seed of the corrupting reordering and of resampling."""

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"unknown method {unknown[0] if unknown else ''!r}; known: {', '.join(METHODS)}")
        if self.n < 2:
            raise ConfigError(f"n must be >= 2 (inputs are corrupted with each other), got {self.n}")
        if self.metric not in DIFFERENTIABLE:
            raise ConfigError(f"unknown metric {self.metric!r}; known: {', '.join(DIFFERENTIABLE)}")
        if self.ig_steps < 0:
            raise ConfigError(f"ig_steps must be >= 0, got {self.ig_steps}")
        if self.ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {self.ablation!r}; known: {', '.join(ABLATIONS)}")
        try:
            object.__setattr__(self, "parameter", float(check_rule(self.rule, self.parameter)))
        except InputError as error:
            raise ConfigError(str(error)) from None


@dataclass
class DiscoveryTimeline:
    """Site scores of each method at each checkpoint, and what they say against the truth."""

    run: str
    steps: list[int]
    k: int
    graph: ModelGraph
    config: DiscoveryConfig
    phases: list[int]
    phase_switches: list[int]
    accuracy: Tensor  # [n_steps] the intact model on the probe
    sites: dict[str, Tensor]  # method -> [n_steps, n_sites] (SiteScores.sites)
    magnitude: dict[str, Tensor]  # method -> [n_steps, n_sites] (SiteScores.magnitude)
    totals: dict[str, Tensor]  # method -> [n_steps] (SiteScores.total)
    counts: list[int]  # the n of the faithfulness curves
    faithfulness: dict[str, Tensor]  # method -> [n_steps, len(counts)]
    circuits: dict[str, list[DiscoveredCircuit]] = field(default_factory=dict)
    relevant: list[tuple[int, ...]] = field(default_factory=list)  # the truth of each step's phase (none: 0..k-1)

    @property
    def methods(self) -> list[str]:
        return list(self.sites)

    def relevant_at(self, row: int) -> tuple[int, ...]:
        """The relevant positions of the phase of `steps[row]` (`TaskConfig.relevant_positions`)."""
        return self.relevant[row] if self.relevant else tuple(range(self.k))

    def truth(self) -> Tensor:
        """[key_pos] when every step shares one truth, else [n_steps, key_pos] (a curriculum over k): True at
        the relevant positions."""
        rows = [self.relevant_at(row) for row in range(len(self.steps))]
        if len(set(rows)) == 1:
            return relevant_mask(rows[0], self.graph.n_ctx)
        return torch.stack([relevant_mask(r, self.graph.n_ctx) for r in rows])

    def positions(self, method: str) -> Tensor:
        """[n_steps, key_pos] how much the output depends on each key position: `ModelGraph.position_scores`
        of the mean over inputs of each input's |change|."""
        return self.graph.position_scores(self.magnitude[method])

    def auroc(self, method: str) -> Tensor:
        return auroc(self.positions(method), self.truth())

    def precision(self, method: str) -> Tensor:
        return precision_at_k(self.positions(method), self.truth())

    def first_reaching(self, method: str, level: float = LEVEL) -> int | None:
        return first_reaching(self.steps, self.auroc(method), level)

    def stays_from(self, method: str, level: float = LEVEL) -> int | None:
        """The step from which the AUROC stays >= `level` to the last step scored (None: below at the end)."""
        return stays_from(self.steps, self.auroc(method), level)

    def reaching(self, method: str) -> str:
        """When the AUROC holds >= LEVEL, in words (`truth.reaching_text`)."""
        return reaching_text(self.first_reaching(method), self.stays_from(method), LEVEL)


# ---- inputs --------------------------------------------------------------------------------------
def select_steps(run: Run, spec: str | list[int] | None) -> list[int]:
    """Saved steps named by `spec`: None (all), a list, or text like "0,500,1000-3000" (ranges keep the
    saved steps inside them). A named step that was not saved is an error."""
    saved = run.steps
    if not saved:
        raise CheckpointError(f"{run.path} has no checkpoint")
    if spec is None:
        return saved
    items = spec if isinstance(spec, list) else [s for s in spec.split(",") if s.strip()]
    chosen: set[int] = set()
    for item in items:
        text = str(item).strip()
        match = re.fullmatch(r"(\d+)\s*-\s*(\d+)|(\d+)", text)
        if not match:
            raise ConfigError(f"a step is a number or a range like 100-500, got {text!r}")
        if match.group(3) is not None:
            run.checkpoint_path(int(text))  # raises, naming the nearest saved steps
            chosen.add(int(text))
            continue
        low, high = int(match.group(1)), int(match.group(2))
        inside = [s for s in saved if low <= s <= high]
        if not inside:
            raise CheckpointError(f"no checkpoint of {run.path} lies in {low}-{high}")
        chosen.update(inside)
    if not chosen:
        raise ConfigError(f"no step given in {spec!r}")
    return sorted(chosen)


def probe_of(run: Run, phase: int, n: int, seed: int) -> Probe:
    """The first n test inputs of a phase and their labels, or RunError when the run has none."""
    if not (run.path / DATA_DIR / data_file(phase)).is_file():
        raise RunError(f"{run.path} has no test data for phase {phase} ({DATA_DIR}/{data_file(phase)} is missing)")
    split = run.data(phase)
    if split.x_test.shape[0] < 2:
        raise RunError(f"{run.path} has {split.x_test.shape[0]} test inputs for phase {phase}; discovery needs at least 2")
    return Probe.shuffled(split.x_test[:n], split.y_test[:n], seed)


# ---- the timeline --------------------------------------------------------------------------------
def plan(run: Run, config: DiscoveryConfig, steps: list[int] | str | None = None) -> tuple[list[int], list[int], dict[int, Probe]]:
    """The chosen steps, the phase of each and a probe per phase: every check `discover` makes before it works.
    Its graph (each key position's value and attention weight, the MLP's neurons) is the paper's model's."""
    require_paper(run.config.model, "discovery's graph of values, attention weights and neurons",
                  "discovery.positions scores its input positions against the truth")
    steps = select_steps(run, steps)
    phases = [run.phase_at(step) for step in steps]
    task = run.config.task
    for phase in (run.config.train.phases[index] for index in sorted(set(phases))):
        if not task.spurious_positions(phase):
            raise ConfigError(f"{run.path} sums all {task.n_ctx} positions (k = {task.phase_k(phase)}): no position "
                              "is spurious, so there is no truth to tell apart")
    return steps, phases, {phase: probe_of(run, phase, config.n, config.seed) for phase in sorted(set(phases))}


def discover(run: Run, config: DiscoveryConfig = DiscoveryConfig(), steps: list[int] | str | None = None,
             device: str = "cpu", progress: bool = True) -> DiscoveryTimeline:
    """Score every chosen checkpoint with every method of `config` (all checks happen before any work).

    On one CPU thread: each operation is small, and a second thread mostly waits for a busy core
    (on 2 busy cores, the paper's run took several times the CPU time with two threads)."""
    run = as_run(run)  # a Run, or its directory
    steps, phases, probes = plan(run, config, steps)
    probes = {phase: probe.to(device) for phase, probe in probes.items()}
    graph = ModelGraph.of_config(run.config.model)
    counts = faithfulness_counts(sum(node.site is not None for node in graph.nodes))
    accuracy, results = [], {m: [] for m in config.methods}
    with single_threaded():
        bar = tqdm(steps, desc=f"discover {run.path.name}", disable=None if progress else True)  # None: terminals only
        for step, phase in zip(bar, phases):
            correct, scored = score_checkpoint(run.model_at(step, device=device), probes[phase], graph, config, counts, step)
            accuracy.append(correct)
            for method, result in scored.items():
                results[method].append(result)
    column = lambda m, i: [r[i] for r in results[m]]
    return DiscoveryTimeline(
        run=run.path.name, steps=steps, k=run.config.task.k, graph=graph, config=config, phases=phases,
        phase_switches=run.phase_boundaries(), accuracy=torch.tensor(accuracy),
        sites={m: torch.stack([r.sites for r in column(m, 0)]) for m in results},
        magnitude={m: torch.stack([r.magnitude for r in column(m, 0)]) for m in results},
        totals={m: torch.tensor(column(m, 1)) for m in results},
        counts=counts, faithfulness={m: torch.stack(column(m, 2)) for m in results},
        circuits={m: column(m, 3) for m in results},
        relevant=[run.config.task.relevant_positions(run.config.train.phases[phase]) for phase in phases])


def score_checkpoint(model, probe: Probe, graph: ModelGraph, config: DiscoveryConfig, counts: list[int], step: int
                     ) -> tuple[float, dict[str, tuple[SiteScores, float, Tensor, DiscoveredCircuit]]]:
    """The model's accuracy on the probe, and per method: site scores, total effect, faithfulness
    curve and pruned circuit."""
    runs = ProbeRuns(model, probe)  # the cached clean and corrupted runs, shared by the methods
    logits, cache = runs.clean
    acts, out = site_activations(cache), {}
    for method in config.methods:
        scored = score_sites(model, method, probe, metric=config.metric, ig_steps=config.ig_steps,
                             ablation=config.ablation, seed=config.seed, runs=runs)
        info = {"method": method, "step": step, "metric": scored.metric}
        circuit = (greedy(model, graph, acts, scored.sites, config.parameter, **info) if config.rule == "acdc"
                   else prune(graph, scored.sites, config.rule, config.parameter, magnitude=scored.magnitude, **info))
        out[method] = (scored, scored.total, circuit)
    # one pass for every method's curve: methods that rank the positions alike share its masks
    curves = faithfulness(model, graph, acts, probe.labels, torch.stack([r[0].sites for r in out.values()]), counts)
    out = {m: (scored, total, curve, circuit) for (m, (scored, total, circuit)), curve in zip(out.items(), curves)}
    return float((logits.argmax(-1) == probe.labels).float().mean()), out


# ---- files ---------------------------------------------------------------------------------------
def discovery_dir(run: Run) -> Path:
    return run.path / ANALYSIS_DIR / DISCOVERY_DIR


def circuit_file(method: str, step: int) -> str:
    return f"{method}_step_{step:07d}"


def saved_files(directory: str | Path) -> list[Path]:
    """The files a saved discovery holds in `directory` (timeline.json, scores.safetensors and each
    circuit's JSON and SVG), and nothing else that lies there."""
    directory = Path(directory)
    names = re.compile(rf"({'|'.join(METHODS)})_step_\d{{7}}\.(json|svg)")
    circuits = directory / "circuits"
    found = [directory / name for name in (TIMELINE_JSON, SCORES) if (directory / name).is_file()]
    return found + sorted(f for f in (circuits.iterdir() if circuits.is_dir() else []) if names.fullmatch(f.name))


def remove_saved(directory: str | Path) -> int:
    """Remove what `saved_files` lists (and circuits/ once empty); how many files went."""
    files = saved_files(directory)
    for path in files:
        path.unlink()
    circuits = Path(directory) / "circuits"
    if circuits.is_dir() and not any(circuits.iterdir()):
        circuits.rmdir()
    return len(files)


def save_timeline(timeline: DiscoveryTimeline, directory: str | Path) -> list[Path]:
    """Write timeline.json, scores.safetensors and circuits/*.json under `directory`; the paths written."""
    directory = Path(directory)
    (directory / "circuits").mkdir(parents=True, exist_ok=True)
    methods = {}
    for m in timeline.methods:
        methods[m] = {
            "auroc": timeline.auroc(m).tolist(), "precision_at_k": timeline.precision(m).tolist(),
            "first_step_auroc_ge_0.99": timeline.first_reaching(m),
            "auroc_ge_0.99_from_step": timeline.stays_from(m), "positions": timeline.positions(m).tolist(),
            "total": timeline.totals[m].tolist(), "faithfulness": timeline.faithfulness[m].tolist(),
        }
    summary = {
        "run": timeline.run, "k": timeline.k, "n_ctx": timeline.graph.n_ctx, "d_mlp": timeline.graph.d_mlp,
        "residual": timeline.graph.residual, "config": asdict(timeline.config), "steps": timeline.steps,
        "phases": timeline.phases, "phase_switches": timeline.phase_switches, "accuracy": timeline.accuracy.tolist(),
        "faithfulness_counts": timeline.counts, "methods": methods,
        "relevant": [list(timeline.relevant_at(row)) for row in range(len(timeline.steps))],
        "position_score": "mean over inputs of |change| at value t + the same at pattern t; "
                          "truth: the relevant positions of each step's phase are in the circuit",
    }
    written = [directory / TIMELINE_JSON, directory / SCORES]
    save_tensors(written[1], {f"{m}.{kind}": getattr(timeline, kind)[m] for m in timeline.methods
                              for kind in ("sites", "magnitude")}, {"run": timeline.run})
    for m, circuits in timeline.circuits.items():
        for circuit in circuits:
            path = directory / "circuits" / f"{circuit_file(m, circuit.step)}.json"
            write_json(path, circuit.to_json())
            written.append(path)
    write_json(written[0], summary)  # last: a timeline.json on disk means the files beside it are complete
    return written


def load_timeline(directory: str | Path) -> DiscoveryTimeline:
    """Read back what `save_timeline` wrote."""
    directory = Path(directory)
    summary = read_json(directory / TIMELINE_JSON)
    tensors, _ = load_tensors(directory / SCORES)
    config = DiscoveryConfig(**{**summary["config"], "methods": tuple(summary["config"]["methods"])})
    methods = list(summary["methods"])
    circuits = {m: [DiscoveredCircuit.from_json(read_json(directory / "circuits" / f"{circuit_file(m, s)}.json"))
                    for s in summary["steps"]] for m in methods}
    return DiscoveryTimeline(
        run=summary["run"], steps=summary["steps"], k=summary["k"],
        graph=ModelGraph(summary["n_ctx"], summary["d_mlp"], summary["residual"]), config=config,
        phases=summary["phases"], phase_switches=summary["phase_switches"], accuracy=torch.tensor(summary["accuracy"]),
        sites={m: tensors[f"{m}.sites"] for m in methods},
        # saved before magnitudes were kept: the signed means stand in (position scores from |mean change|)
        magnitude={m: tensors.get(f"{m}.magnitude", tensors[f"{m}.sites"].abs()) for m in methods},
        totals={m: torch.tensor(summary["methods"][m]["total"]) for m in methods},
        counts=summary["faithfulness_counts"],
        faithfulness={m: torch.tensor(summary["methods"][m]["faithfulness"]) for m in methods}, circuits=circuits,
        relevant=[tuple(row) for row in summary.get("relevant", [])])  # saved before tasks had other truths: 0..k-1
