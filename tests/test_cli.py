import json
import subprocess
import sys

import pytest

from circuitpath import load_run
from circuitpath.cli import main
from cli_status import exit_status

TINY = ["--n-ctx", "6", "--k", "3", "--n-train", "40", "--n-test", "50", "--d-model", "8",
        "--log-every", "5", "--checkpoint-every", "10", "--dense-checkpoints", "3"]


def test_train_with_every_field_as_a_flag(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["train", "--out", str(out), "--p", "4", "--steps", "20", "--lr", "1e-2", "--seed", "3", *TINY]) == 0
    run = load_run(out)
    assert run.config.task.seed == run.config.model.seed == 3 and run.config.model.d_mlp == 32
    assert run.steps[-1] == 20 and "test acc" in capsys.readouterr().out


def test_curriculum_phases_and_config_file(tmp_path):
    config = {"task": {"n_ctx": 6, "k": 3, "n_train": 40}, "model": {"n_ctx": 6, "d_model": 8},
              "train": {"phases": [{"p": 2, "steps": 10, "lr": 1e-3}, {"p": 4, "steps": 10, "lr": 1e-2}]}}
    (tmp_path / "c.json").write_text(json.dumps(config))
    (tmp_path / "c.toml").write_text('[task]\nn_ctx = 6\nk = 3\nn_train = 40\n[model]\nn_ctx = 6\nd_model = 8\n')
    assert main(["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "a"), "--seed", "2"]) == 0
    assert [ph.p for ph in load_run(tmp_path / "a").config.train.phases] == [2, 4]
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "b"),
                 "--phases", "2:5:1e-3,4:5:1e-2"]) == 0
    assert load_run(tmp_path / "b").config.train.total_steps == 10


@pytest.mark.parametrize("args, message", [
    (["--p", "7", "--steps", "5"], "phase p = 7 exceeds the model's n_tokens = 4"),
    (["--phases", "2:5:1e-3", "--lr", "1e-2"], "--phases cannot be combined with --lr"),
    (["--phases", "2:five:1e-3"], "'2:five:1e-3'"),
    (["--k", "9"], "k must be <= n_ctx (6), got 9"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--lr", "0"], "lr must be a positive number, got 0.0"),
    (["--p", "0"], "p must be >= 2, got 0"),
    (["--steps", "0"], "steps must be >= 1, got 0"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
])
def test_bad_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "bad"
    assert main(["train", "--out", str(out), *TINY, "--steps", "5", *args] if "--phases" not in args and "--steps" not in args
                else ["train", "--out", str(out), *TINY, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("circuitpath: error:") and "\n" not in err
    assert not out.exists()


def test_the_parser_s_choices_are_the_analyses_own():
    """The CLI names them itself so that parsing imports no torch; they must not drift from the analyses'."""
    from circuitpath.analysis.ablation import METHODS
    from circuitpath.analysis.patching import METRICS
    from circuitpath.cli.probing import ABLATIONS, PATCH_METRICS

    assert PATCH_METRICS == tuple(METRICS) and ABLATIONS == METHODS


def test_usage_mistakes_are_one_line_too(capsys):
    for argv in (["trian"], ["train", "--stpes", "3"], ["train", "--residual", "z_bar"], ["patch"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("circuitpath: error:") and "\n" not in err and "--help" in err


def test_every_command_s_help_has_examples_and_the_package_names_its_version(capsys):
    import argparse
    from importlib import metadata

    from circuitpath.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    lacking = [name for name, parser in sub.choices.items() if "\nexamples:\n" not in parser.format_help()]
    assert lacking == []
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"circuitpath {metadata.version('circuitpath')}\n"


def test_a_flag_the_command_does_not_know_points_to_that_command_s_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predict", "runs/x", "--seeds", "1"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err == ("circuitpath: error: predict: unrecognized arguments: --seeds 1 "
                                            "(see circuitpath predict --help)")


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--seeds", "", "--experiments", "a=4:5:1e-2"], "--seeds is given an empty value"),
    (["sweep", "--out="], "--out is given an empty value"),
    (["train", "--out", "", "--steps", "5"], "--out is given an empty value"),
    (["show", ""], "argument 2 is given an empty value"),
])
def test_an_empty_value_is_refused_not_taken_for_the_default(tmp_path, monkeypatch, capsys, argv, message):
    """`--seeds ''` would otherwise mean the default 32 seeds, and `--out ''` the current directory."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.startswith("circuitpath: error: " + message) and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_an_empty_over_still_means_the_whole_activation(trained_run, capsys):
    """The one flag whose empty value has a meaning (ablate's --help shows it)."""
    assert main(["ablate", str(trained_run.path), "--hook", "blocks.0.hook_attn_out", "--over", ""]) == 0
    assert "blocks.0.hook_attn_out" in capsys.readouterr().out


def test_an_output_that_cannot_be_created_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("not a directory")
    for out in ("/proc/no/run", str(tmp_path / "file" / "run")):
        assert main(["train", "--out", out, *TINY, "--steps", "5"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("circuitpath: error: cannot create the run directory") and "\n" not in err
    assert (tmp_path / "file").read_text() == "not a directory"


def test_resume_of_a_completed_run_does_nothing(trained_run, capsys):
    before = snapshot(trained_run.path)
    assert main(["train", "--resume", str(trained_run.path)]) == 0
    assert "already completed; nothing to resume" in capsys.readouterr().out
    assert snapshot(trained_run.path) == before


@pytest.mark.parametrize("flags", [["--lr", "5"], ["--steps", "50", "--d-model", "64"], ["--seed", "1"], ["--untied"]])
def test_resume_refuses_the_flags_of_a_new_run_in_one_line(trained_run, capsys, flags):
    """A flag that --resume would leave unused (the run keeps what it recorded) is refused, not ignored."""
    before = snapshot(trained_run.path)
    assert main(["train", "--resume", str(trained_run.path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("circuitpath: error: --resume continues a run as it recorded it") and "\n" not in err
    assert err.endswith("drop " + ", ".join(f for f in flags if f.startswith("--")))
    assert snapshot(trained_run.path) == before


def test_every_train_flag_is_either_refused_or_used_by_resume():
    """A flag added to train later must be sorted here: describes a new run, or applies to a resumed one too."""
    import argparse

    from circuitpath.cli import build_parser
    from circuitpath.cli.training import NEW_RUN_FLAGS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {a.option_strings[0] for a in sub.choices["train"]._actions if a.option_strings} - {"-h"}
    with_resume = {"--resume", "--allow-other-platform", "--device", "--init", "--weight-decay", "--decay", "--betas",
                   "--warmup", "--clip"}  # the last six are checked against the run's record
    assert flags == set(NEW_RUN_FLAGS) | with_resume and not set(NEW_RUN_FLAGS) & with_resume


def test_show_tells_a_killed_run_from_a_running_one(trained_run, capsys):
    import json

    from circuitpath.runs.storage import RunLock

    info = json.loads((trained_run.path / "run.json").read_text())
    (trained_run.path / "run.json").write_text(json.dumps({**info, "status": "running"}))  # as a kill -9 leaves it
    assert main(["show", str(trained_run.path)]) == 0
    assert "status: interrupted (marked running, but no process is writing it" in capsys.readouterr().out
    lock = RunLock(trained_run.path).acquire()
    try:
        assert main(["show", str(trained_run.path)]) == 0
        assert "status: running " in capsys.readouterr().out
    finally:
        lock.release()


def test_bad_config_files(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('{"model": {"widht": 3}}')
    assert main(["train", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key 'widht' in model" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_existing_run_needs_force(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "r"), "--steps", "5", *TINY]
    assert main(args) == 0
    before = (tmp_path / "r" / "run.json").read_text()
    assert main(args) == 2
    assert "already holds a run; pass --force" in capsys.readouterr().err
    assert (tmp_path / "r" / "run.json").read_text() == before
    assert main([*args, "--force"]) == 0


def test_show_and_help(trained_run, capsys):
    assert main(["show", str(trained_run.path)]) == 0
    out = capsys.readouterr().out
    assert "status: completed" in out and '"d_model"' in out
    assert not any(f'"{name}"' in out for name in ("n_layers", "n_heads", "readout", "norm"))  # the transformer's
    for command in ["train", "reproduce", "sweep", "analyze", "patch", "ablate", "diagram", "show"]:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
    assert main(["show", str(trained_run.path.parent)]) == 2


def snapshot(path):
    return {f.relative_to(path): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file() and f.name != ".lock"}


def test_patch_prints_one_effect_per_position(trained_run, capsys):
    assert main(["patch", str(trained_run.path), "--n", "30"]) == 0
    out = capsys.readouterr().out
    assert "logit_diff: clean" in out and all(f"\n  v{t} " in out for t in range(6))
    header = next(line for line in out.splitlines() if "effect" in line and "restored" in line and "=" not in line)
    assert header.split() == ["position", "effect", "restored"]  # the labels' column is named for what they are


@pytest.mark.parametrize("args, message", [
    (["--hook", "blocks.0.hook_q"], "unknown hook 'blocks.0.hook_q'; valid hooks: hook_embed, hook_pos_embed"),
    (["--step", "13"], "step 13 was not saved in"),
    (["--over", "pos"], "has axes ('key_pos', 'd_model'), not 'pos'"),
    (["--metric", "kl"], "argument --metric: invalid choice: 'kl' (choose from"),
    (["--corrupt", "0-9"], "--corrupt position 9 is past the sequence length 6"),
    (["--corrupt", "-1"], "--corrupt takes positions N, N-M or a comma-separated list of them (0 to 5), or 'each'; got '-1'"),
    (["--corrupt", "4-2"], "got '4-2'"),
    (["--corrupt", "each", "--metric", "loss"], "--corrupt each patches blocks.0.attn.hook_v over key_pos with its own metric; drop --metric"),
    (["--over", "key_pos,key_pos"], "axis 'key_pos' is named twice"),
    (["--n", "0"], "--n must be >= 1, got 0"),
])
def test_patch_bad_requests_exit_2_with_one_line_and_touch_nothing(trained_run, capsys, args, message):
    before = snapshot(trained_run.path)
    assert exit_status(["patch", str(trained_run.path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert snapshot(trained_run.path) == before


def test_patch_refuses_a_corrupted_checkpoint_by_name(trained_run, capsys):
    target = trained_run.path / "checkpoints" / "step_0000040.safetensors"
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x5A
    target.write_bytes(bytes(raw))
    assert main(["patch", str(trained_run.path)]) == 2
    assert "step_0000040.safetensors is corrupted" in capsys.readouterr().err


def test_ablate_reports_train_and_test_before_and_after(trained_run, capsys):
    assert main(["ablate", str(trained_run.path), "--method", "zero"]) == 0
    out = capsys.readouterr().out
    assert "intact" in out and "first k (0-2)" in out and "spurious (3-5)" in out and all(f"\nv{t} " in out for t in range(6))
    assert exit_status(["ablate", str(trained_run.path), "--method", "noise"]) == 2
    assert "argument --method: invalid choice: 'noise'" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the message on machines without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), *TINY, "--steps", "5", "--device", "cuda"]) == 2
    assert "device 'cuda' was asked for but no CUDA GPU is available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_patch_each_position_prints_the_fraction_restored(trained_run, capsys):
    assert main(["patch", str(trained_run.path), "--corrupt", "each", "--n", "40"]) == 0
    out = capsys.readouterr().out
    assert "0 = as corrupted, 1 = as clean" in out and "(phase 1, p = 4)" in out
    rows = [line for line in out.splitlines() if line.startswith("  v")]
    assert len(rows) == 6 and rows[0].startswith("  v0 (summed)") and "inputs flip" in rows[0]


def test_probing_an_earlier_step_uses_the_data_of_its_phase(trained_run, capsys):
    assert main(["patch", str(trained_run.path), "--step", "20", "--corrupt", "each"]) == 0
    assert "step 20 (phase 0, p = 2)" in capsys.readouterr().out
    assert main(["ablate", str(trained_run.path), "--step", "20"]) == 0
    assert "step 20 (phase 0, p = 2)" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["diagram", "RUN", "--out", "/nonexistent_dir/x"],
                                     ["analyze", "RUN", "--out", "/nonexistent_dir/report.html"]])
def test_an_output_in_a_missing_directory_is_refused_before_any_work(trained_run, capsys, command):
    from pathlib import Path

    before = snapshot(trained_run.path)
    assert main([str(trained_run.path) if part == "RUN" else part for part in command]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "circuitpath: error: --out: directory /nonexistent_dir does not exist"
    assert not Path("/nonexistent_dir").exists() and snapshot(trained_run.path) == before


# ---- an experiment directory is not a run: its runs are named ------------------------------------
@pytest.fixture
def experiment(trained_run, tmp_path):
    """runs/curriculum/seed_0..seed_2 as `circuitpath reproduce` lays them out."""
    import shutil

    root = tmp_path / "runs"
    for seed in range(3):
        shutil.copytree(trained_run.path, root / "curriculum" / f"seed_{seed}")
    return root


@pytest.mark.parametrize("command", [["patch"], ["ablate"], ["diagram"], ["show"], ["analyze"], ["llc"],
                                     ["branch", "--at", "10", "--phases", "4:5:1e-2", "--out", "OUT"]])
def test_a_command_given_an_experiment_directory_names_its_runs(experiment, capsys, command):
    before = snapshot(experiment)
    argv = [command[0], str(experiment / "curriculum"), *command[1:]]
    code = main([str(experiment / "out") if part == "OUT" else part for part in argv])
    err = capsys.readouterr().err.strip()
    if command[0] == "branch":  # branch takes a directory of runs: it branches every seed
        assert code == 0 and sorted(p.name for p in (experiment / "out").iterdir()) == ["seed_0", "seed_1", "seed_2"]
        return
    assert code == 2 and "\n" not in err, err
    assert err == (f"circuitpath: error: {experiment / 'curriculum'} holds runs seed_0..seed_2, not a run: pass one "
                   f"of them, e.g. {experiment / 'curriculum' / 'seed_0'}")
    assert snapshot(experiment) == before


def test_the_seed_reproduce_drew_is_the_example(experiment, capsys):
    (experiment / "claims.json").write_text(json.dumps({"experiments": {"curriculum": {}}, "shown_seed": 2}))
    assert main(["patch", str(experiment / "curriculum")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        f"e.g. {experiment / 'curriculum' / 'seed_2'} (the seed reproduce drew)")
    assert main(["show", str(experiment)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"circuitpath: error: {experiment} holds runs curriculum/seed_0..seed_2, not a run: pass one of them, "
        f"e.g. {experiment / 'curriculum' / 'seed_2'} (the seed reproduce drew)")
    (experiment / "claims.json").write_text('{"shown_seed": ')  # unreadable: the first run is the example
    assert main(["show", str(experiment)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"e.g. {experiment / 'curriculum' / 'seed_0'}")


def test_a_directory_without_runs_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["show", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.strip() == f"circuitpath: error: {tmp_path / 'empty'} is not a run directory (no run.json)"


def test_help_examples_name_runs_that_reproduce_writes(capsys):
    for command in ["analyze", "patch", "ablate", "diagram", "branch", "llc"]:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for path in (word for word in text.split() if word.startswith("runs/")):
            if path.split("/")[1] in ("curriculum", "scratch") and path not in ("runs/curriculum", "runs/curriculum_lr3e-2"):
                assert path.split("/")[2].startswith("seed_"), (command, path)


# ---- show: what is on disk, checked ---------------------------------------------------------------
def test_show_names_the_platform_and_a_truncated_last_checkpoint_in_one_line(trained_run, capsys):
    from circuitpath.platform import describe

    assert main(["show", str(trained_run.path)]) == 0
    out = capsys.readouterr().out
    assert f"platform: {describe(trained_run.info['platform'])}\n" in out and "unreadable" not in out
    last = trained_run.path / "checkpoints" / "step_0000040.safetensors"
    last.write_bytes(last.read_bytes()[:-7])
    assert main(["show", str(trained_run.path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # the error is the one line: no config printed before it
    err = captured.err.strip()
    assert err.startswith(f"circuitpath: error: {last} is truncated or corrupted (") and "\n" not in err, err


def test_show_names_every_unreadable_file_in_its_one_line(trained_run, capsys):
    (trained_run.path / "data" / "phase_1.safetensors").unlink()
    state = trained_run.path / "state" / "step_0000040.safetensors"
    raw = bytearray(state.read_bytes())
    raw[-1] ^= 1
    state.write_bytes(bytes(raw))
    assert main(["show", str(trained_run.path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == (f"circuitpath: error: {state} is corrupted (its checksum does not match its "
                                    "contents) (and 1 more unreadable: data/phase_1.safetensors)")


def test_show_a_run_without_a_platform(trained_run, capsys):
    info = json.loads((trained_run.path / "run.json").read_text())
    info.pop("platform")
    (trained_run.path / "run.json").write_text(json.dumps(info))
    assert main(["show", str(trained_run.path)]) == 0
    assert "platform: an unrecorded platform (written before circuitpath recorded it)" in capsys.readouterr().out


# ---- --n: exactly as given, or refused ------------------------------------------------------------
@pytest.mark.parametrize("command, message", [
    (["patch"], "--n 999999 is more than the 4056 test inputs of phase 1 (p = 4); pass at most 4056"),
    (["patch", "--corrupt", "each"], "--n 999999 is more than the 4056 test inputs of phase 1 (p = 4)"),
    (["ablate"], "--n 999999 is more than the 40 train inputs of phase 1 (p = 4); pass at most 40"),
    (["diagram"], "--n 999999 is more than the 4056 test inputs of phase 1 (p = 4)"),
])
def test_an_n_beyond_the_data_is_refused_not_cut(trained_run, capsys, command, message):
    before = snapshot(trained_run.path)
    assert main([command[0], str(trained_run.path), *command[1:], "--n", "999999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"circuitpath: error: {message}" or (message in err and "\n" not in err), err
    assert snapshot(trained_run.path) == before


def test_the_number_of_inputs_used_is_printed(trained_run, capsys):
    assert main(["ablate", str(trained_run.path), "--n", "30"]) == 0
    assert "on 30 train and 30 test inputs" in capsys.readouterr().out
    assert main(["ablate", str(trained_run.path)]) == 0  # left out: up to 2048 of each set
    assert "on 40 train and 2048 test inputs" in capsys.readouterr().out
    assert main(["patch", str(trained_run.path), "--n", "40"]) == 0
    assert ", 40 test inputs, positions [0, 1, 2] corrupted" in capsys.readouterr().out


def test_train_starts_from_a_preset_with_its_draw_options_and_refuses_a_bad_one(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--preset", "vis_finetune:vis_n_tokens=3:vis_finetune_p=3",
                 "--seed", "2", "--phases", "2:4:3e-3:32,3:4:3e-3:32", "--n-train", "64"]) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["model"]["n_tokens"] == 3 and config["model"]["d_model"] == 2
    assert config["model"]["init"] == "shared_stream" and config["task"]["with_replacement"] is True
    assert config["task"]["seed"] == 2 and [ph["p"] for ph in config["train"]["phases"]] == [2, 3]
    for preset, says in (("nope", "(or give --phases)"), ("vis_p2:vis_n_tokens=1", "vis_n_tokens"),
                         ("vis_finetune_reset", "a branch of vis_finetune at its switch")):
        capsys.readouterr()
        assert main(["train", "--out", str(tmp_path / "bad"), "--preset", preset]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and preset.split(":")[0] in err[0] and says in err[0]
        assert not (tmp_path / "bad").exists()
