"""The figure scripts in analyses/ run on saved runs and write their pages."""

import importlib
import sys
from pathlib import Path

import pytest

from circuitpath import train
from conftest import tiny_config

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
SCRIPTS = sorted(p.stem for p in ANALYSES.glob("fig*.py"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, phases in (("scratch", "4:30:1e-2"), ("curriculum", "2:10:1e-3,4:20:1e-2")):
        train(tiny_config(phases), root / name, progress=False)
    return [str(root / "scratch"), str(root / "curriculum")]


def test_one_script_per_paper_figure():
    assert [s.split("_")[0] for s in SCRIPTS] == ["fig2", "fig3", "fig4", "fig5", "fig6", "fig7"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_writes_its_figure(runs, script, monkeypatch):
    monkeypatch.syspath_prepend(str(ANALYSES))
    module = importlib.import_module(script)
    path = module.main(runs)
    assert path.name == f"{script}.html" and path.stat().st_size > 3_000_000
    sys.modules.pop(script, None)
