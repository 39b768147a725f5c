"""Outcome prediction: features from real checkpoints, cross-validated AUROC, and sweeps too small to use."""

import json
import subprocess
import sys

import numpy as np
import pytest

from circuitpath import train_many
from circuitpath.prediction import (PredictionError, circuit_features, cross_validated_auroc, parse_fractions,
                                    predict_outcomes, step_at)
from conftest import tiny_config

CLI = [sys.executable, "-m", "circuitpath.cli"]
SEEDS = range(12)  # p = 2, 100 steps at lr 3e-2: seeds 6, 7, 9 and 10 generalise, the others do not


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict") / "sweep"
    configs = [tiny_config("2:100:3e-2", seed=s) for s in SEEDS]
    runs = train_many(configs, [root / "fast" / f"seed_{s}" for s in SEEDS], progress=False)
    assert sum(r.final_metrics()["test_acc"] >= 0.99 for r in runs) == 4
    return root, runs


def test_auroc_is_one_for_a_separating_feature_and_near_chance_for_noise():
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 12)
    separating = np.c_[y + rng.normal(0, 0.1, len(y))]
    score = cross_validated_auroc(separating, y, ["f"], repeats=5)
    assert score.auroc == 1.0 and score.interval == (1.0, 1.0) and score.per_feature_auroc["f"] == 1.0
    noise = cross_validated_auroc(rng.normal(size=(len(y), 3)), y, ["a", "b", "c"], repeats=5)
    assert 0.2 < noise.auroc < 0.8 and noise.interval[0] < 0.5 < noise.interval[1]
    with pytest.raises(PredictionError, match="1 generalise and 31 do not; each class needs at least 2"):
        cross_validated_auroc(separating, np.array([1] + [0] * 31), ["f"])


def test_features_are_read_at_the_checkpoint_before_the_fraction(sweep):
    _, runs = sweep
    run = runs[0]
    assert step_at(run, 0.25) == 20 and step_at(run, 0.33) == 30 and step_at(run, 1.0) == 100
    features = circuit_features(run, 30, n=24)
    assert 0 <= features["attention on first k"] <= 1 and features["clusters of z_A"] >= 1
    assert features["|W_Q|"] == pytest.approx(float(run.weights_at(30)["W_Q"].norm()))
    assert "LLC" not in features  # none saved for this run


def test_prediction_scores_both_feature_sets_at_every_fraction(sweep):
    root, runs = sweep
    result = predict_outcomes(root, [0.2, 0.5], repeats=3, n=24, progress=False)
    (group,) = result.groups
    assert group.name == "fast" and sum(group.generalised) == 4
    assert [f.fraction for f in group.fractions] == [0.2, 0.5]
    for f in group.fractions:
        for score in (f.circuit, f.loss):
            assert 0 <= score.interval[0] <= score.auroc <= score.interval[1] <= 1
        assert set(f.loss.features) == {"log10 train loss", "log10 test loss"}
    text = "\n".join(result.lines())
    assert "circuit AUROC" in text and "fast" in text
    json.dumps(result.to_dict())


def test_a_sweep_too_small_to_cross_validate_is_one_line_exit_2(sweep, tmp_path):
    _, runs = sweep
    few = [tiny_config("2:100:3e-2", seed=s) for s in (0, 1, 6)]  # one run generalises
    train_many(few, [tmp_path / "small" / "x" / f"seed_{s}" for s in (0, 1, 6)], progress=False)
    done = subprocess.run([*CLI, "predict", str(tmp_path / "small")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "1 of 3 runs generalise; each class needs at least 2" in done.stderr
    assert not (tmp_path / "small" / "prediction.json").exists()
    with pytest.raises(Exception, match=r"fractions must lie in \(0, 1\]"):
        parse_fractions("0,0.5")


def test_cli_writes_json_and_figures(sweep):
    root, _ = sweep
    done = subprocess.run([*CLI, "predict", str(root), "--at", "0.3", "--repeats", "2", "--n", "24"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    saved = json.loads((root / "prediction.json").read_text())
    assert saved["groups"][0]["fractions"][0]["steps"] == [30] * 12
    assert "plotly" in (root / "prediction.html").read_text()
