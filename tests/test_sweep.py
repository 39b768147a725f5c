import json

import pytest

from circuitpath import ConfigError, load_run
from circuitpath.cli import main
from circuitpath.sweep import parse_experiments, parse_seeds, summarize, sweep

SMALL = {"n_ctx": 6, "n_train": 60}


def test_parse_seeds_and_experiments():
    assert parse_seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    assert parse_experiments("scratch,curriculum") == {"scratch": "4:10000:1e-3", "curriculum": "2:3000:1e-3,4:7000:1e-2"}
    assert parse_experiments("a=4:5:1e-2;b=2:5:1e-3,4:5:1e-2") == {"a": "4:5:1e-2", "b": "2:5:1e-3,4:5:1e-2"}
    for bad, message in [("3-1", "seeds are"), ("x", "seeds are"), ("-2", "seeds are")]:
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="unknown experiment 'scrach'"):
        parse_experiments("scrach")


def test_sweep_writes_one_ordinary_run_per_seed_and_counts_successes(tmp_path):
    from circuitpath import TaskConfig, ModelConfig

    summaries = sweep(tmp_path, [0, 1, 2, 3, 4], {"a": "4:20:1e-2"}, task=TaskConfig(**SMALL),
                      model=ModelConfig(n_ctx=6), progress=False)
    runs = [load_run(tmp_path / "a" / f"seed_{s}") for s in range(5)]
    assert [r.config.model.seed for r in runs] == [0, 1, 2, 3, 4]
    assert summaries["a"].test_acc == [r.final_metrics()["test_acc"] for r in runs]
    assert summaries["a"].successes == [s for s, r in enumerate(runs) if r.final_metrics()["test_acc"] >= 0.99]


def test_sweep_cli_resume_finishes_unfinished_runs(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), "--seeds", "0-1", "--experiments", "a=4:20:1e-2", "--n-ctx", "6",
            "--n-train", "60"]
    assert main(args) == 0
    assert "paper's claim" not in capsys.readouterr().out
    assert (out / "sweep.html").stat().st_size > 1_000_000  # plotly.js embedded
    before = summarize(out)["a"].test_acc
    # as if the machine rebooted mid-sweep: one run interrupted, one never written
    info = json.loads((out / "a" / "seed_0" / "run.json").read_text())
    (out / "a" / "seed_0" / "run.json").write_text(json.dumps(info | {"status": "interrupted"}))
    import shutil

    shutil.rmtree(out / "a" / "seed_1")
    assert main(["sweep", "--resume", str(out)]) == 0
    assert summarize(out)["a"].test_acc == before
    assert main(args) == 2
    assert "already holds a sweep" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
