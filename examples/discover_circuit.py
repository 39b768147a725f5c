# %% [markdown]
# Find the circuit at every checkpoint with three methods and grade each against the truth: the
# task sums its relevant positions (0..k-1, unless it drew others), so a method that works ranks them
# above the others (AUROC 1). Writes RUN_DIR/analysis/discovery_example/.
# Run: python examples/discover_circuit.py [RUN_DIR]   (e.g. runs/curriculum/seed_0 after `circuitpath reproduce`)

# %%
import tempfile
from pathlib import Path

import circuitpath as cp
from _demo import command_line
from circuitpath.analysis.discovery import DiscoveryConfig, discover, discovery_dir, pruning_story, save_timeline
from circuitpath.plots.discovery import DISCOVERY_NOTES, discovery_figures, write_discovered_svg
from circuitpath.plots.html import write_html


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = str(Path(tempfile.mkdtemp()) / "discover")
        # the paper's p = 2 phase (~10 s); better: `circuitpath reproduce`, then pass runs/curriculum/seed_0
        cp.train(cp.RunConfig(train=cp.TrainConfig(phases=cp.parse_phases("2:3000:1e-3"))), run_dir)
    run = cp.load_run(run_dir)
    if not run.steps:
        raise cp.CheckpointError(f"{run.path} has no checkpoint")
    steps = run.steps[:: max(1, len(run.steps) // 12)] + run.steps[-1:]  # about a dozen checkpoints
    timeline = discover(run, DiscoveryConfig(n=512), sorted(set(steps)))

    # %% AUROC and precision@k of the position scores, per method and step
    for method in timeline.methods:
        aurocs = " ".join(f"{a:.2f}" for a in timeline.auroc(method).tolist())
        print(f"{method:>11}: AUROC {aurocs}; {timeline.reaching(method)}")
    story = pruning_story(timeline, "attribution")
    print(f"spurious position edges last strengthened at step {story.last_spurious_strengthened}")

    # %% the final circuit of each method, and the figures of the report's circuit timeline section
    final = {m: circuits[-1] for m, circuits in timeline.circuits.items()}
    for method, circuit in final.items():
        print(f"{method} keeps: {', '.join(circuit.nodes)}")
    directory = discovery_dir(run).parent / "discovery_example"  # beside what `circuitpath discover` writes, not over it
    save_timeline(timeline, directory)
    svg = write_discovered_svg(final["patching"], timeline.graph, timeline.k, directory / "final_patching.svg", run.path.name)
    page = write_html(discovery_figures({run.path.name: timeline}), directory / "discovery.html", "circuit discovery")
    print(DISCOVERY_NOTES)
    print("written:", page, svg)


# %%
if __name__ == "__main__":
    command_line(main)
