"""Sweeps on the local backend: the summary file, pruned checkpoints, resume from any crash state, bad input."""

import json
import shutil
import sys

import pytest
import torch

from circuitpath import ConfigError, ModelConfig, RunError, TaskConfig, load_run
from circuitpath.cli import main
from circuitpath.runs import CHECKPOINT_DIR, DATA_DIR, STATE_DIR, saved_steps
from circuitpath.runs.storage import RunLock, write_json
from circuitpath.sweep import parse_experiments, parse_seeds, read_summary, resume_sweep, summary_lines, sweep
from circuitpath.sweep.finish import prune_checkpoints
from circuitpath.sweep.spec import configs, load_spec
from cli_status import exit_status

SMALL = {"n_ctx": 6, "n_train": 60}
EXPERIMENTS = {"a": "4:20:1e-2", "b": "2:10:1e-3,4:10:1e-2"}
SEEDS = [0, 1, 2]
CLI_SMALL = ["--seeds", "0-1", "--experiments", "a=4:20:1e-2", "--n-ctx", "6", "--n-train", "60"]


def run_small(out, **options):
    return sweep(out, SEEDS, EXPERIMENTS, task=TaskConfig(**SMALL), model=ModelConfig(n_ctx=6), progress=False,
                 **options)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished local sweep of two experiments x three seeds, every checkpoint kept (copy it to change it)."""
    out = tmp_path_factory.mktemp("finished") / "sweep"
    return out, run_small(out)


def runs_of(out):
    return {(name, seed): load_run(out / name / f"seed_{seed}") for name in EXPERIMENTS for seed in SEEDS}


def assert_same_final(run, other):
    assert run.metrics == other.metrics
    last, last_other = run.weights_at(run.steps[-1]), other.weights_at(other.steps[-1])
    assert run.steps[-1] == other.steps[-1] and all(torch.equal(last[k], last_other[k]) for k in last)


def test_parse_seeds_and_experiments():
    assert parse_seeds("0-3,7,2") == [0, 1, 2, 3, 7]
    assert parse_experiments("scratch,curriculum") == {"scratch": "4:10000:1e-3", "curriculum": "2:3000:1e-3,4:7000:1e-2"}
    assert parse_experiments("a=4:5:1e-2;b=2:5:1e-3,4:5:1e-2") == {"a": "4:5:1e-2", "b": "2:5:1e-3,4:5:1e-2"}
    for bad, message in [("3-1", "seeds are"), ("x", "seeds are"), ("-2", "seeds are")]:
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)
    with pytest.raises(ConfigError, match="unknown experiment 'scrach'"):
        parse_experiments("scrach")


def test_sweep_writes_one_ordinary_run_per_seed_and_counts_successes(finished):
    out, summaries = finished
    runs = runs_of(out)
    assert [runs["a", s].config.model.seed for s in SEEDS] == SEEDS
    assert [runs["b", s].config.train.phases[0].p for s in SEEDS] == [2, 2, 2]
    assert summaries["a"].test_acc == [runs["a", s].final_metrics()["test_acc"] for s in SEEDS]
    assert summaries["b"].successes == [s for s in SEEDS if runs["b", s].final_metrics()["test_acc"] >= 0.99]


def test_a_curriculum_summary_says_whether_its_first_phase_was_solved_at_the_switch(finished):
    out, summaries = finished
    runs = runs_of(out)
    data = json.loads((out / "summary.json").read_text())
    for record in data["runs"]:
        run = runs[record["experiment"], record["seed"]]
        if record["experiment"] == "a":
            assert record["phase_ends"] == []
        else:  # the logged line at the switch, read back from the run's own metrics
            assert record["phase_ends"] == [next(m for m in run.metrics if m["step"] == 10)]
    assert summaries["a"].first_phase_solved is None
    solved = [s for s in SEEDS if next(m for m in runs["b", s].metrics if m["step"] == 10)["test_acc"] >= 0.99]
    assert summaries["b"].first_phase_solved == solved and summaries["b"].switch == {"step": 10, "p": 2}
    line = next(line for line in summary_lines(summaries) if line.startswith("b: its first phase"))
    assert f"(step 10) for {len(solved)} of 3 seeds" in line


def test_summary_json_holds_every_run_and_prints_without_any_run_directory(finished, tmp_path, capsys):
    out, summaries = finished
    data = json.loads((out / "summary.json").read_text())
    assert data["sweep"]["seeds"] == SEEDS and data["sweep"]["keep_checkpoints"] == "all"
    assert [(r["experiment"], r["seed"]) for r in data["runs"]] == [(n, s) for n in EXPERIMENTS for s in SEEDS]
    for record, run in zip(data["runs"], runs_of(out).values()):
        assert record["config"] == json.loads(json.dumps(run.config.to_dict()))
        assert record["final"] == run.final_metrics()
        assert record["status"] == "completed" and record["path"] == f"{record['experiment']}/seed_{record['seed']}"
        assert record["generalises"] == (run.final_metrics()["test_acc"] >= 0.99)
    # only summary.json is left: no checkpoint, no metrics file, no run directory to open
    copy = tmp_path / "sweep"
    copy.mkdir()
    shutil.copy(out / "summary.json", copy)
    assert main(["sweep", "--summary", str(copy)]) == 0
    assert capsys.readouterr().out.splitlines() == summary_lines(summaries)


def test_keep_checkpoints_ends_keeps_first_phase_ends_and_last(finished, tmp_path):
    out, summaries = finished
    pruned = tmp_path / "ends"
    assert run_small(pruned, keep_checkpoints="ends") == summaries
    for (name, seed), full in runs_of(out).items():
        run = load_run(pruned / name / f"seed_{seed}")
        assert run.steps == ([0, 20] if name == "a" else [0, 10, 20])
        assert saved_steps(run.path / STATE_DIR) == [20]
        assert_same_final(run, full)
    # a resume that finds nothing to train prunes nothing more and rewrites the same summary
    before = (pruned / "summary.json").read_bytes()
    assert resume_sweep(pruned, progress=False) == summaries
    assert (pruned / "summary.json").read_bytes() == before


def test_resume_applies_a_new_checkpoint_policy_and_only_prunes_completed_runs(finished, tmp_path):
    out, summaries = finished
    copy = shutil.copytree(out, tmp_path / "sweep")
    unfinished = copy / "a" / "seed_1"
    info = json.loads((unfinished / "run.json").read_text())
    write_json(unfinished / "run.json", info | {"status": "interrupted"})
    files = sorted(p.name for p in (unfinished / CHECKPOINT_DIR).iterdir())
    assert prune_checkpoints(unfinished) == 0  # a run --resume still has to finish is never pruned
    assert sorted(p.name for p in (unfinished / CHECKPOINT_DIR).iterdir()) == files
    assert resume_sweep(copy, keep_checkpoints="ends", progress=False) == summaries
    assert json.loads((copy / "sweep.json").read_text())["keep_checkpoints"] == "ends"
    assert all(len(run.steps) <= 3 for run in runs_of(copy).values())
    assert_same_final(load_run(unfinished), load_run(out / "a" / "seed_1"))


def test_resume_replaces_a_half_created_run_and_trains_a_missing_one(finished, tmp_path):
    out, summaries = finished
    copy = shutil.copytree(out, tmp_path / "sweep")
    stub = copy / "a" / "seed_1"  # what a process killed inside RunWriter.create leaves: no run.json yet
    shutil.rmtree(stub)
    (stub / DATA_DIR).mkdir(parents=True)
    (stub / CHECKPOINT_DIR).mkdir()
    (stub / STATE_DIR).mkdir()
    shutil.copy(out / "a" / "seed_1" / DATA_DIR / "phase_0.safetensors", stub / DATA_DIR)
    (stub / RunLock.FILE).write_text("process 1")
    shutil.rmtree(copy / "b" / "seed_2")
    (copy / "summary.json").unlink()
    assert resume_sweep(copy, progress=False) == summaries
    for key in [("a", 1), ("b", 2)]:
        assert_same_final(runs_of(copy)[key], runs_of(out)[key])


def test_resume_refuses_a_folder_that_is_not_a_run_and_touches_nothing(finished, tmp_path):
    out, _ = finished
    copy = shutil.copytree(out, tmp_path / "sweep")
    foreign = copy / "b" / "seed_0"
    shutil.rmtree(foreign)
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="seed_0 exists, is not empty and is not a run; refusing"):
        resume_sweep(copy, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_sweep_cli_resume_finishes_unfinished_runs(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--out", str(out), *CLI_SMALL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "paper's claim" not in printed and f"summary written to {out / 'summary.json'}" in printed
    assert (out / "sweep.html").stat().st_size > 1_000_000  # plotly.js embedded
    before = read_summary(out)["a"].test_acc
    # as if the machine rebooted mid-sweep: one run interrupted, one never written
    info = json.loads((out / "a" / "seed_0" / "run.json").read_text())
    (out / "a" / "seed_0" / "run.json").write_text(json.dumps(info | {"status": "interrupted"}))
    shutil.rmtree(out / "a" / "seed_1")
    assert main(["sweep", "--resume", str(out)]) == 0
    assert "2 unfinished runs to train" in capsys.readouterr().err
    assert read_summary(out)["a"].test_acc == before
    assert main(["sweep", "--resume", str(out)]) == 0
    assert "nothing to train" in capsys.readouterr().err
    assert main(args) == 2
    assert "already holds a sweep" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path)]) == 2


def test_sweep_cli_sets_the_model_size(tmp_path, capsys):
    out = tmp_path / "small"
    assert main(["sweep", "--out", str(out), *CLI_SMALL, "--d-model", "2", "--d-mlp", "8"]) == 0
    capsys.readouterr()
    model = load_run(out / "a" / "seed_1").config.model
    assert (model.d_model, model.d_mlp, model.n_ctx) == (2, 8, 6)
    assert main(["sweep", "--out", str(tmp_path / "wide"), *CLI_SMALL, "--d-model", "4"]) == 0
    assert load_run(tmp_path / "wide" / "a" / "seed_0").config.model.d_mlp == 16  # 4 d


def snapshot(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


@pytest.mark.parametrize("args, message", [
    (["--backend", "rey"], "unknown backend 'rey' (use local or ray)"),
    (["--keep-checkpoints", "end"], "--keep-checkpoints is all or ends, got 'end'"),
    (["--backend", "ray", "--chunk", "0"], "--chunk must be at least 1 seed, got 0"),
    (["--backend", "ray", "--cpus", "0"], "--cpus must be at least 1, got 0"),
    (["--backend", "ray", "--retries", "-1"], "--retries must be 0 or more, got -1"),
    (["--backend", "ray", "--address", "headnode"], "--address is HOST:PORT (e.g. 10.0.0.1:6379), ray://HOST:PORT"),
    (["--backend", "ray", "--address", "head:99999"], "got 'head:99999'"),
    (["--backend", "ray", "--address", "head:6379", "--cpus", "2"], "--cpus sizes a local Ray instance"),
    (["--chunk", "2"], "--address, --cpus, --chunk and --retries apply to --backend ray"),
    (["--seeds", "0-x"], "seeds are N, N-M or a comma-separated list of them, got '0-x'"),
    (["--chunks", "2"], "unrecognized arguments: --chunks 2"),
    (["--d-mlp", "0"], "d_mlp must be >= 1, got 0"),
    (["--backend", "ray", "--chunk", "two"], "argument --chunk: invalid int value: 'two'"),
    (["--experiments", ""], "--experiments is given an empty value; leave it out for its default"),
    (["--seeds="], "--seeds is given an empty value"),
    (["--experiments", "a=4:5:1e-2;a=2:5:1e-3"], "experiment 'a' is given twice in 'a=4:5:1e-2;a=2:5:1e-3'"),
    (["--experiments", "../evil=4:5:1e-2"], "experiment name '../evil' in '../evil=4:5:1e-2' is not a directory name"),
    (["--experiments", "a b=4:5:1e-2"], "experiment name 'a b'"),
    (["--experiments", "x=4:5:1e-2;"], "an empty experiment in 'x=4:5:1e-2;'"),
    (["--experiments", "scratch,,curriculum"], "an empty experiment in 'scratch,,curriculum'"),
])
def test_bad_sweep_flags_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "sw"
    assert exit_status(["sweep", "--out", str(out), *CLI_SMALL, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert sorted(tmp_path.iterdir()) == []  # nothing, not even beside OUT


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_an_output_path_that_is_a_file_is_refused_before_anything_is_written(tmp_path, capsys, backend):
    target = tmp_path / "taken"
    target.write_text("keep me")
    for out, named in [(target, target), (target / "sub", target)]:
        assert main(["sweep", "--out", str(out), *CLI_SMALL, "--backend", backend]) == 2
        err = capsys.readouterr().err.strip()
        assert f"{named} exists and is not a directory" in err and "\n" not in err
    assert target.read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without a GPU")
def test_cuda_without_a_gpu_is_refused_before_sweep_json_is_written(tmp_path, capsys):
    out = tmp_path / "sw"
    for _ in range(2):  # the second attempt meets the same error, not "already holds a sweep"
        assert main(["sweep", "--out", str(out), *CLI_SMALL, "--device", "cuda"]) == 2
        assert "device 'cuda' was asked for but no CUDA GPU is available" in capsys.readouterr().err
        assert not out.exists()


def test_ray_backend_without_ray_installed_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "circuitpath.sweep.ray_backend", raising=False)
    out = tmp_path / "sw"
    assert main(["sweep", "--out", str(out), *CLI_SMALL, "--backend", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--backend ray needs Ray, which is not installed; install it with: pip install ray" in err
    assert "\n" not in err and not out.exists()


def test_summary_and_resume_bad_input(finished, tmp_path, capsys):
    out, _ = finished
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(out / "sweep.json", unfinished)
    (tmp_path / "file").write_text("")
    cases = [
        (["--summary", str(tmp_path / "nope")], "nope is not a sweep directory (it does not exist"),
        (["--summary", str(tmp_path / "file")], "file is not a sweep directory (it does not exist or is not a"),
        (["--summary", str(tmp_path)], "is not a sweep directory (no summary.json)"),
        (["--summary", str(unfinished)], "has no summary.json: the sweep has not finished; finish it with: "
                                         f"circuitpath sweep --resume {unfinished}"),
        (["--summary", str(out), "--seeds", "0-3"], "--summary only reads"),
        (["--summary", str(out), "--backend", "ray"], "--summary only reads"),
        (["--resume", str(out), "--seeds", "0-3", "-T", "6"], "--resume continues a sweep as it was configured; "
                                                              "drop --seeds, --n-ctx"),
        (["--resume", str(tmp_path / "nope")], "is not a sweep directory"),
        (["--resume", str(out), "--keep-checkpoints", "some"], "--keep-checkpoints is all or ends, got 'some'"),
    ]
    before = snapshot(out)
    for args, message in cases:
        assert main(["sweep", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (args, err)
    assert snapshot(out) == before and not (tmp_path / "nope").exists()


def test_a_sweep_json_written_before_residual_and_checkpoint_policy_existed_reads_as_it_was_trained(finished, tmp_path):
    out, _ = finished
    copy = shutil.copytree(out, tmp_path / "sweep")
    spec = json.loads((copy / "sweep.json").read_text())
    del spec["keep_checkpoints"], spec["model"]["residual"]
    write_json(copy / "sweep.json", spec)
    loaded = load_spec(copy)
    assert loaded["keep_checkpoints"] == "all"
    assert {c.model.residual for c in configs(loaded, "a")} == {"normalized"}


def test_a_preset_by_name_keeps_its_own_settings_and_draw_options():
    from circuitpath.paper.presets import experiments

    got = parse_experiments("vis_finetune:vis_n_tokens=3:vis_finetune_p=3,small_curriculum")
    assert got == {"vis_finetune": {"preset": "vis_finetune", "vis_n_tokens": 3, "vis_finetune_p": 3},
                   "small_curriculum": {"preset": "small_curriculum"}}
    spec = json.loads(json.dumps({"seeds": [0, 5], "experiments": got, "task": {}, "model": {"residual": "attn_out"}}))
    assert configs(spec, "vis_finetune") == [experiments(vis_n_tokens=3, vis_finetune_p=3)["vis_finetune"].config(s)
                                            for s in (0, 5)]
    run = configs(spec, "small_curriculum", [2])[0]
    assert run == experiments()["small_curriculum"].config(2) and run.model.d_model == 2


@pytest.mark.parametrize("experiments, message", [
    ("vis_finetune:vis_n_tokens=3", "phase p = 4 exceeds the model's n_tokens = 3"),
    ("vis_finetune:vis_finetune_p=5", "phase p = 5 exceeds the model's n_tokens = 4"),
    ("vis_p2:vis_n_tokens=1", "n_tokens must be >= 2, got 1"),
    ("vis_p2:colour=3", "bad preset option 'colour=3'"),
])
def test_bad_preset_options_exit_2_naming_the_value_and_write_nothing(tmp_path, capsys, experiments, message):
    out = tmp_path / "sw"
    assert exit_status(["sweep", "--out", str(out), "--seeds", "0", "--experiments", experiments]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


def test_model_flags_that_a_preset_would_ignore_are_refused(tmp_path, capsys):
    out = tmp_path / "sw"
    assert exit_status(["sweep", "--out", str(out), "--seeds", "0", "--experiments", "vis_p2", "--d-model", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--d-model would not apply to the preset vis_p2" in err and "\n" not in err
    assert not out.exists()
