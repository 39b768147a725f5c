"""The LLC estimator: devinterp's SGLD around a checkpoint, our reduction, settings and traces on disk."""

import json
import math
import sys

import pytest
import torch

from circuitpath import train
from circuitpath.analysis.llc import LLCSettings
from circuitpath.errors import ConfigError
from conftest import tiny_config

QUICK = LLCSettings(num_chains=2, num_draws=30, num_burnin_steps=10, batch_size=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tiny_config("2:60:1e-2,4:60:1e-2"), tmp_path_factory.mktemp("llc") / "run", progress=False)


def test_settings_are_checked_and_n_beta_defaults_to_n_over_log_n():
    with pytest.raises(ConfigError, match="lr must be a positive number, got 0"):
        LLCSettings(lr=0)
    with pytest.raises(ConfigError, match="num_chains must be an integer >= 1, got 0"):
        LLCSettings(num_chains=0)
    with pytest.raises(ConfigError, match="batch_size must be <= the training set's 40 sequences, got 256"):
        LLCSettings().resolved(40)
    assert LLCSettings().resolved(2048).n_beta == pytest.approx(2048 / math.log(2048))
    assert LLCSettings(n_beta=5.0).resolved(2048).n_beta == 5.0


def test_the_estimate_is_n_beta_times_the_mean_draw_loss_above_the_checkpoint_loss(run):
    from circuitpath.analysis.llc import estimate_llc

    split = run.data(1)
    model = run.model_at(120)
    estimate = estimate_llc(model, split.x_train, split.y_train, QUICK, step=120)
    assert estimate.trace.shape == (2, 40) and torch.isfinite(estimate.trace).all()
    n_beta = 40 / math.log(40)
    expected = [n_beta * (row[10:].mean().item() - estimate.init_loss) for row in estimate.trace]
    assert estimate.per_chain == pytest.approx(expected, rel=1e-5)
    assert estimate.llc == pytest.approx(sum(expected) / 2, rel=1e-5)
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(split.x_train), split.y_train).item()
    assert estimate.init_loss == pytest.approx(loss, rel=1e-6)
    again = estimate_llc(run.model_at(120), split.x_train, split.y_train, QUICK, step=120)
    assert torch.equal(again.trace, estimate.trace)  # seeded chains
    other = estimate_llc(run.model_at(120), split.x_train, split.y_train, LLCSettings(**{**vars(QUICK), "seed": 1}))
    assert not torch.equal(other.trace, estimate.trace)
    # sampling around a point pulls the loss up from the checkpoint's, never far below it at a trained solution
    assert estimate.trace[:, 10:].mean() > estimate.init_loss - 0.05


def test_cli_writes_estimates_settings_and_traces(run, capsys):
    from circuitpath.cli import main

    assert main(["llc", str(run.path), "--steps", "60,115-125", "--chains", "2", "--draws", "20", "--burnin", "5",
                 "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "SGLD lr 1e-05, localization 10000, n_beta 10.8, 2 chains x (5 burn-in + 20 draws), batch 8" in out
    saved = json.loads((run.path / "analysis" / "llc.json").read_text())
    assert [e["step"] for e in saved["estimates"]] == [60, 120] and saved["phase_switches"] == [60]
    assert saved["settings"] == {"lr": 1e-5, "localization": 1e4, "n_beta": pytest.approx(40 / math.log(40)),
                                 "num_chains": 2, "num_draws": 20, "num_burnin_steps": 5, "batch_size": 8, "seed": 0}
    assert [len(chain) for chain in saved["estimates"][0]["trace"]] == [25, 25]
    page = (run.path / "analysis" / "llc.html").read_text()
    assert "plotly" in page and "SGLD chains" in page and "Local learning coefficient over training" in page


def test_without_devinterp_the_command_says_how_to_install_it(run, monkeypatch, capsys):
    from circuitpath.cli import main

    for name in ("devinterp", "devinterp.optim", "devinterp.slt.sampler"):
        monkeypatch.setitem(sys.modules, name, None)  # what an environment without the extra sees
    assert main(["llc", str(run.path), "--steps", "60"]) == 2
    err = capsys.readouterr().err.strip()
    assert "the LLC needs devinterp" in err and 'pip install -e ".[llc]"' in err and "\n" not in err


def test_traces_figure_draws_every_chain():
    from circuitpath.analysis.llc import LLCEstimate, LLCOverTraining
    from circuitpath.plots.llc import llc_figure, llc_traces_figure

    estimates = [LLCEstimate(s, 1.0 + s, 0.1, [1.0, 1.2], 0.5, torch.rand(2, 15)) for s in range(8)]
    result = LLCOverTraining("r", LLCSettings(n_beta=10.0), estimates, [3])
    traces = llc_traces_figure(result, max_panels=4)
    assert len(traces.data) == 4 * 2
    assert list(llc_figure(result).data[0].x) == list(range(8))
    assert LLCOverTraining.from_dict(json.loads(json.dumps(result.to_dict()))).steps == list(range(8))


def test_outcomes_script_groups_runs_by_verdict_and_draws_every_runs_chains(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from circuitpath import train_many
    from circuitpath.paper.experiments import generalises

    runs = train_many([tiny_config("2:80:3e-2", seed=s) for s in (0, 6)], [tmp_path / "runs" / f"seed_{s}" for s in (0, 6)],
                      progress=False)
    assert [generalises(r.final_metrics()) for r in runs] == [False, True]  # seed 6 generalises, seed 0 does not
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "analyses"))
    import llc_outcomes

    rows = llc_outcomes.main([str(tmp_path / "runs"), "--html", str(tmp_path / "llc.html")], settings=QUICK)
    assert [(Path(path).name, verdict) for path, verdict, _ in rows] == [("seed_0", "neither"), ("seed_6", "generalises")]
    assert [estimate.trace.shape for _, _, estimate in rows] == [(2, 40), (2, 40)]
    page = (tmp_path / "llc.html").read_text()
    assert "SGLD chains: generalising runs" in page and "SGLD chains: runs that neither" in page
    assert "generalises: n = 1" in capsys.readouterr().out
