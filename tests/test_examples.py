"""The examples run on a saved run and answer the question they ask."""

import importlib
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    loaded = []

    def load(name):
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    for name in loaded:
        sys.modules.pop(name, None)


def test_patch_positions_tells_summed_positions_from_ignored_ones(example, trained_run, capsys):
    example("patch_positions").main(str(trained_run.path))
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("position ")]
    assert len(rows) == 6 and rows[0].startswith("position 0 (summed)")
    assert all("of the way back to clean" in row or "no answer flips" in row for row in rows)


@pytest.mark.parametrize("name, expected", [
    ("ablate_positions", "first k (0-2)"),
    ("draw_circuit", "kept:"),
    ("probe_checkpoint", "attention mass on the first k = 3 positions"),
])
def test_examples_run_on_a_given_run(example, trained_run, capsys, name, expected):
    example(name).main(str(trained_run.path))
    assert expected in capsys.readouterr().out


def test_the_demo_run_is_short():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _demo import DEMO
    finally:
        sys.path.remove(str(EXAMPLES))
        sys.modules.pop("_demo", None)
    assert DEMO.train.total_steps <= 500 and DEMO.task.n_ctx == 8
