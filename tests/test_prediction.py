"""Outcome prediction: features from real checkpoints, cross-validated AUROC, and sweeps too small to use."""

import json
import shutil

import numpy as np
import pytest

from circuitpath import train_many
from circuitpath.analysis.prediction import PredictionError, circuit_features, cross_validated_auroc, step_at
from conftest import tiny_config

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
    # the interval is the bootstrap of the point's own statistic, so it holds the point
    for spread in (0.3, 0.6, 1.0):
        weak = cross_validated_auroc(np.c_[y + rng.normal(0, spread, len(y))], y, ["w"], repeats=5)
        assert weak.interval[0] <= weak.auroc <= weak.interval[1] and weak.interval[0] < weak.interval[1], spread
    with pytest.raises(PredictionError, match="1 generalise and 31 do not; each class needs at least 2"):
        cross_validated_auroc(separating, np.array([1] + [0] * 31), ["f"])


def test_row_wise_auroc_is_sklearns_with_ties():
    from sklearn.metrics import roc_auc_score

    from circuitpath.analysis.prediction import auroc_rows

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (50, 13))
    y[:, 0], y[:, 1] = 0, 1
    score = rng.integers(0, 4, (50, 13)).astype(float)  # many ties
    assert auroc_rows(y, score) == pytest.approx([roc_auc_score(a, b) for a, b in zip(y, score)], abs=1e-12)


def test_features_are_read_at_the_checkpoint_before_the_fraction(sweep):
    _, runs = sweep
    run = runs[0]
    assert step_at(run, 0.25) == 20 and step_at(run, 0.33) == 30 and step_at(run, 1.0) == 100
    features = circuit_features(run, 30, n=24)
    assert 0 <= features["attention on first k"] <= 1 and features["clusters of z_A"] >= 1
    assert features["|W_Q|"] == pytest.approx(float(run.weights_at(30)["W_Q"].norm()))
    assert "LLC" not in features  # none saved for this run


def test_prediction_scores_both_feature_sets_at_every_fraction_and_writes_json_and_figures(sweep, capsys):
    from circuitpath.cli import main

    root, _ = sweep
    assert main(["predict", str(root), "--at", "0.2,0.5", "--repeats", "3", "--n", "24"]) == 0
    text = capsys.readouterr().out
    assert "circuit AUROC" in text and "fast" in text
    (group,) = json.loads((root / "prediction.json").read_text())["groups"]
    assert group["name"] == "fast" and sum(group["generalised"]) == 4
    assert [f["fraction"] for f in group["fractions"]] == [0.2, 0.5]
    assert [f["steps"] for f in group["fractions"]] == [[20] * 12, [50] * 12]
    for f in group["fractions"]:
        for score in (f["circuit"], f["loss"]):
            low, high = score["auroc_95"]
            assert 0 <= low <= score["auroc"] <= high <= 1
        assert f["loss"]["features"] == ["log10 train loss", "log10 test loss"]
        assert "attention on first k" in f["circuit"]["features"] and len(f["features"]) == 12
    assert "plotly" in (root / "prediction.html").read_text()


def test_a_group_with_one_run_of_a_class_is_skipped_and_named(sweep, tmp_path, capsys):
    from circuitpath.cli import main

    root, _ = sweep
    for seed in (0, 1, 6):  # one of them generalises
        shutil.copytree(root / "fast" / f"seed_{seed}", tmp_path / "small" / "x" / f"seed_{seed}")
    assert main(["predict", str(tmp_path / "small"), "--repeats", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "x: 1 of 3 runs generalise; each class needs at least 2" in err and "\n" not in err
    assert not (tmp_path / "small" / "prediction.json").exists()
