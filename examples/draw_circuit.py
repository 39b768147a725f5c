# %% [markdown]
# Draw the circuit a checkpoint uses: each component weighted by the accuracy it loses when
# mean-ablated (its effect), small ones pruned; written as interactive HTML and as a static SVG. Measured
# on training inputs where test accuracy is at chance (a memorising model), on test inputs otherwise.
# Writes RUN_DIR/circuit.html and RUN_DIR/circuit.svg (as `circuitpath diagram` does).
# Run: python examples/draw_circuit.py [RUN_DIR]   (e.g. runs/curriculum/seed_0 after `circuitpath reproduce`)

# %%
import circuitpath as cp
from _demo import command_line, demo_run
from circuitpath.analysis.circuit import circuit_at
from circuitpath.plots.circuit import circuit_figure, write_circuit_svg
from circuitpath.plots.html import write_html


def main(run_dir: str | None = None) -> None:
    if run_dir is None:
        run_dir = demo_run("circuit")
    run = cp.load_run(run_dir)
    circuit = circuit_at(run, on="auto", n=1024, threshold=0.05)
    print(f"measured on {circuit.n_inputs} {circuit.why}")
    print("kept:", ", ".join(f"{n} ({d['effect']:.2f})" for n, d in circuit.graph.nodes(data=True)))
    print("pruned:", ", ".join(circuit.pruned))
    write_html([circuit_figure(circuit, run.path.name)], run.path / "circuit.html", "circuit")
    print("written:", write_circuit_svg(circuit, run.path / "circuit.svg", run.path.name), run.path / "circuit.html")


# %%
if __name__ == "__main__":
    command_line(main)
