"""One file that holds a whole sweep's outcome: `OUT/summary.json`, and the table printed from it.

Written when a sweep (or its resume) ends, from each run's run.json and last metrics line; read by
`circuitpath sweep --summary OUT` without opening any run directory, so a table over hundreds of
seeds prints at once. Plain JSON (no timestamp, keys in a fixed order): the same sweep gives the
same bytes, whichever backend trained it, and it loads anywhere (`pandas.json_normalize(data["runs"])`).

```
{"format": 1, "circuitpath": VERSION, "sweep": {the sweep.json spec},
 "verdicts": {"generalises": "test acc >= 0.99", "memorises": "..."},
 "runs": [{"experiment", "seed", "path", "status", "config", "final", "phase_ends", "generalises",
           "memorises", and "relevant_positions" per phase when the task's are not the first k}, ...]}
```
`phase_ends` holds the last metrics line of every phase but the last, so a curriculum that fails
says whether its pretraining had solved its own task at the switch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from circuitpath.analysis.outcomes import GENERALISES, MEMORISES, generalises, memorises
from circuitpath.errors import RunError
from circuitpath.runs import RUN_JSON, Run, load_run
from circuitpath.runs.storage import read_json, write_json
from circuitpath.sweep.spec import SWEEP_JSON, load_spec, run_path

SUMMARY_JSON = "summary.json"
FORMAT = 1


@dataclass
class ExperimentSummary:
    name: str
    seeds: list[int]
    test_acc: list[float]
    train_acc: list[float]
    successes: list[int] = field(default_factory=list)  # seeds with test acc >= 0.99
    memorised: list[int] = field(default_factory=list)  # seeds with train >= 0.99, test < 0.5
    first_phase_solved: list[int] | None = None  # multi-phase: seeds whose first phase ended at test acc >= 0.99
    switch: dict | None = None  # multi-phase: the first phase's last metrics line of the first seed (step, p)

    @property
    def success_rate(self) -> float:
        return len(self.successes) / len(self.seeds)


def run_record(experiment: str, seed: int, run: Run) -> dict:
    """One run's entry: its config, status, last metrics line and verdicts."""
    final = run.final_metrics()
    record = {"experiment": experiment, "seed": seed, "path": run_path(Path("."), experiment, seed).as_posix(),
              "status": run.status, "config": run.config.to_dict(), "final": final, "phase_ends": phase_ends(run),
              "generalises": generalises(final), "memorises": memorises(final)}
    task = run.config.task
    if task.positions != "first":  # the truth each phase summed, written out (a first-k task's is 0..k-1)
        record["relevant_positions"] = [list(task.relevant_positions(phase)) for phase in run.config.train.phases]
    return record


def phase_ends(run: Run) -> list[dict]:
    """The last logged metrics line of each phase but the last (empty for a single phase)."""
    ends = {}
    for line in run.metrics:
        ends[line["phase"]] = line
    return [ends[i] for i in range(len(run.config.train.phases) - 1) if i in ends]


def write_summary(out: str | Path) -> dict[str, ExperimentSummary]:
    """Collect every run of a finished sweep into OUT/summary.json and return the per-experiment summaries.

    Reads each run's run.json and metrics, never a checkpoint; refuses while a run is unfinished.
    """
    out = Path(out)
    spec = load_spec(out)
    records = []
    for name in spec["experiments"]:
        for seed in spec["seeds"]:
            path = run_path(out, name, seed)
            run = load_run(path) if (path / RUN_JSON).is_file() else None
            if run is None or run.status != "completed":
                raise RunError(f"{path} has not completed; finish the sweep with: circuitpath sweep --resume {out}")
            records.append(run_record(name, seed, run))
    from circuitpath import __version__

    data = {"format": FORMAT, "circuitpath": __version__, "sweep": spec,
            "verdicts": {"generalises": GENERALISES, "memorises": MEMORISES}, "runs": records}
    write_json(out / SUMMARY_JSON, data)
    return summaries_of(data)


def read_summary(out: str | Path) -> dict[str, ExperimentSummary]:
    """The per-experiment summaries from OUT/summary.json alone (no run directory is opened)."""
    out = Path(out)
    if not out.is_dir():
        raise RunError(f"{out} is not a sweep directory (it does not exist or is not a directory)")
    if not (out / SUMMARY_JSON).is_file():
        if (out / SWEEP_JSON).is_file():
            raise RunError(f"{out} has no {SUMMARY_JSON}: the sweep has not finished; "
                           f"finish it with: circuitpath sweep --resume {out}")
        raise RunError(f"{out} is not a sweep directory (no {SUMMARY_JSON})")
    data = read_json(out / SUMMARY_JSON)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("runs"), list):
        raise RunError(f"{out / SUMMARY_JSON} is not a circuitpath sweep summary of format {FORMAT}")
    return summaries_of(data)


def summaries_of(data: dict) -> dict[str, ExperimentSummary]:
    summaries = {}
    for name in data["sweep"]["experiments"]:
        runs = [r for r in data["runs"] if r["experiment"] == name]
        summaries[name] = ExperimentSummary(
            name=name,
            seeds=[r["seed"] for r in runs],
            test_acc=[r["final"]["test_acc"] for r in runs],
            train_acc=[r["final"]["train_acc"] for r in runs],
            successes=[r["seed"] for r in runs if r["generalises"]],
            memorised=[r["seed"] for r in runs if r["memorises"]],
        )
        firsts = [(r["seed"], r["phase_ends"][0]) for r in runs if r.get("phase_ends")]
        if firsts and len(firsts) == len(runs):
            summaries[name].first_phase_solved = [seed for seed, end in firsts if generalises(end)]
            summaries[name].switch = {"step": firsts[0][1]["step"], "p": firsts[0][1]["p"]}
    return summaries


def summary_lines(summaries: dict[str, ExperimentSummary]) -> list[str]:
    width = max([len("experiment"), *(len(name) for name in summaries)])
    header = f"{'experiment':<{width}} {'seeds':>5} {'test acc >= 0.99':>17} {'memorised':>10} {'test acc min / median / max':>29}"
    lines = [header, "-" * len(header)]
    for s in summaries.values():
        spread = f"{min(s.test_acc):.3f} / {statistics.median(s.test_acc):.3f} / {max(s.test_acc):.3f}"
        lines.append(f"{s.name:<{width}} {len(s.seeds):>5} {len(s.successes):>8} ({s.success_rate:>5.0%}) "
                     f"{len(s.memorised):>10} {spread:>29}")
    lines += [line for s in summaries.values() if (line := _first_phase_line(s))]
    if "scratch" in summaries and "curriculum" in summaries:
        both = set(summaries["scratch"].memorised) & set(summaries["curriculum"].successes)
        n = len(summaries["scratch"].seeds)
        lines.append(f"paper's claim (scratch memorises and curriculum generalises) holds for {len(both)} of {n} seeds")
    return lines


def _first_phase_line(s: ExperimentSummary) -> str | None:
    """How often the first phase had solved its own task at the switch, and what followed either way."""
    if s.first_phase_solved is None:
        return None
    solved = set(s.first_phase_solved)
    after = [len(solved & set(s.successes)), len(set(s.successes) - solved)]
    return (f"{s.name}: its first phase (p = {s.switch['p']}) ended at test acc >= 0.99 by the switch "
            f"(step {s.switch['step']}) for {len(solved)} of {len(s.seeds)} seeds; the run generalised for "
            f"{after[0]} of those {len(solved)} and {after[1]} of the other {len(s.seeds) - len(solved)}")
