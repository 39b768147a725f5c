"""The flags a study of the standard transformer needs: sweep --model and logging, switch mini-batches."""

import json

import pytest

from circuitpath import load_run
from circuitpath.cli import main
from circuitpath.sweep.switching import SwitchSettings
from cli_status import exit_status

TINY = ["--n-ctx", "6", "--n-train", "40"]


def test_a_sweep_trains_the_transformer_it_is_given_and_logs_as_asked(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--seeds", "0-1", "--experiments", "a=4:12:1e-2:8", *TINY, "--d-model", "8",
                 "--model", "transformer", "--n-layers", "2", "--n-heads", "2", "--norm", "layer",
                 "--log-every", "4", "--checkpoint-every", "6"]) == 0
    run = load_run(out / "a" / "seed_1")
    model, train = run.config.model, run.config.train
    assert (model.arch, model.n_layers, model.n_heads, model.norm) == ("transformer", 2, 2, "layer")
    assert [line["step"] for line in run.metrics if line["step"] % 4 == 0][-3:] == [4, 8, 12]
    assert train.log_every == 4 and train.checkpoint_every == 6
    assert json.loads((out / "sweep.json").read_text())["train"]["log_every"] == 4
    assert "a " in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--model", "transformer", "--n-heads", "3"], "n_heads must divide d_model (32), got 3"),
    (["--model", "lstm"], "argument --model: invalid choice: 'lstm' (choose from"),
    (["--log-every", "0"], "log_every"),
    (["--experiments", "vis_p2", "--n-layers", "2"], "--n-layers would not apply to the preset vis_p2"),
])
def test_bad_sweep_model_flags_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "sweep"
    argv = ["sweep", "--out", str(out), "--seeds", "0", *TINY, *args]
    if "--experiments" not in args:
        argv += ["--experiments", "a=4:4:1e-2"]
    assert exit_status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_switch_settings_keep_the_batch_positions_and_logging_through_their_json():
    settings = SwitchSettings.from_flags(seeds=[0], switch_steps=[0, 4], total=10, p2_lr=1e-2, p4_lr=1e-2, n_ctx=6,
                                         n_train=32, positions="random", batch_size=8, log_every=2)
    again = SwitchSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings
    p2 = again.p2_config(0)
    assert p2.train.phases[0].batch_size == 8 and p2.train.log_every == 2 and p2.task.positions == "random"
    assert again.branch_phases(4)[0].batch_size == 8


def test_switch_settings_written_before_the_batch_existed_train_full_batch():
    settings = SwitchSettings(seeds=(0,), switch_steps=(0, 4), total=10)
    data = settings.to_dict()
    del data["batch_size"]
    assert SwitchSettings.from_dict(data).branch_phases(4)[0].batch_size is None


def test_switch_with_mini_batches_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "switch"
    assert main(["switch", "--out", str(out), "--seeds", "0", "--at", "0,4", "--total", "8", "--batch-size", "8",
                 *TINY, "--d-model", "8", "--model", "transformer"]) == 0
    branch = load_run(out / "switch_4" / "seed_0")
    assert [(ph.p, ph.batch_size) for ph in branch.config.train.phases] == [(2, 8), (4, 8)]
    assert [ph.batch_size for ph in load_run(out / "switch_0" / "seed_0").config.train.phases] == [8]
    assert main(["switch", "--out", str(tmp_path / "bad"), "--seeds", "0", "--at", "0", "--total", "8",
                 "--batch-size", "0", *TINY]) == 2
    assert "batch_size" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_the_transformer_study_trains_each_cell_once_and_tabulates_rates(tmp_path, monkeypatch, capsys):
    from pathlib import Path
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "analyses"))
    study = importlib.import_module("transformer_study")
    monkeypatch.setattr(study, "SHAPES", ((1, 2), None))
    monkeypatch.setattr(study, "TASKS", ("random",))
    study.main([str(tmp_path), "--seeds", "0-1", "--steps", "20"])
    rows = json.loads((tmp_path / "study.json").read_text())["rows"]
    assert [(r["model"], r["experiment"], r["task"], r["seeds"]) for r in rows] == [
        ("L1H2", "scratch", "random", [0, 1]), ("L1H2", "curriculum", "random", [0, 1]),
        ("paper", "scratch", "random", [0, 1]), ("paper", "curriculum", "random", [0, 1])]
    assert load_run(tmp_path / "paper_random" / "scratch" / "seed_0").config.model.arch == "cross_attention"
    run = load_run(tmp_path / "L1H2_random" / "curriculum" / "seed_1")
    assert [(ph.p, ph.steps, ph.batch_size) for ph in run.config.train.phases] == [(2, 6, 32), (4, 14, 32)]
    assert run.config.task.positions == "random" and run.config.model.n_heads == 2
    first = capsys.readouterr().out
    assert "L1H2   random  curriculum   0/2 (0.00-0.66)  " in first
    stamp = (tmp_path / "L1H2_random" / "summary.json").stat().st_mtime_ns
    study.main([str(tmp_path), "--seeds", "0-1", "--steps", "20"])  # done: read again, nothing trained
    assert (tmp_path / "L1H2_random" / "summary.json").stat().st_mtime_ns == stamp
    assert capsys.readouterr().out.splitlines()[-5:] == first.splitlines()[-5:]


@pytest.mark.parametrize("args, message", [(["--steps", "1"], "--steps must be at least 2"),
                                           (["--seeds", "x"], "seeds are N, N-M")])
def test_the_study_refuses_bad_settings_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    from pathlib import Path
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "analyses"))
    study = importlib.import_module("transformer_study")
    with pytest.raises(SystemExit) as stop:
        study.main([str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err.splitlines()[-1] and not (tmp_path / "out").exists()
