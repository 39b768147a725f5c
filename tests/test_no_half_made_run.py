"""No half-made run: every command that creates runs reads and checks all it reads before it writes.

Each input of each creating command is spoilt in turn (a truncated checkpoint, a bad run.json, a
missing state file, ...); the command must end in one line with exit status 2 and leave its target
as it was: absent, or byte for byte what it held before (with --force).
"""

import json
import shutil
from pathlib import Path

import pytest

from circuitpath import load_run, train
from circuitpath.cli import main
from circuitpath.sweep.switching import SwitchSettings, branch_path, p2_path, switch_experiment
from conftest import tiny_config
from test_branching_cli import refused, tree
from test_switching import tiny_settings

#: The parent: p = 2 for 20 steps, then p = 4 for 20; checkpoints 0, 1, 2, 5, 10, 20, 30, 40; states 30, 40.
PHASES = "2:20:1e-2,4:20:1e-2"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return train(tiny_config(PHASES), tmp_path_factory.mktemp("parent") / "run", progress=False).path


@pytest.fixture
def parent(pristine, tmp_path):
    path = tmp_path / "parent"
    shutil.copytree(pristine, path)
    return path


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_run_json(path: Path, change) -> None:
    info = json.loads((path / "run.json").read_text())
    change(info)
    (path / "run.json").write_text(json.dumps(info))


def other_capability(info: dict) -> None:
    info["platform"]["cpu_capability"] = "OTHER"


CKPT, STATE, DATA = "checkpoints/step_{:07d}.safetensors", "state/step_{:07d}.safetensors", "data/phase_{}.safetensors"

# (what is spoilt, the branch step and phases, the spoiling, what the one line says)
SPOILT = [
    ("truncated checkpoint at the branch step", 40, "4:10:1e-2", lambda p: truncate(p / CKPT.format(40)),
     "step_0000040.safetensors is truncated or corrupted"),
    ("altered checkpoint before the branch step", 40, "4:10:1e-2", lambda p: flip_last_byte(p / CKPT.format(10)),
     "step_0000010.safetensors is corrupted (its checksum does not match"),
    ("truncated checkpoint at the start of a replay", 30, "4:10:1e-2",
     lambda p: ((p / STATE.format(30)).unlink(), truncate(p / CKPT.format(20))),
     "step_0000020.safetensors is truncated or corrupted"),
    ("truncated checkpoint 0 of a branch at 0", 0, "4:10:1e-2", lambda p: truncate(p / CKPT.format(0)),
     "step_0000000.safetensors is truncated or corrupted"),
    ("truncated state at the branch step", 40, "4:10:1e-2", lambda p: truncate(p / STATE.format(40)),
     "state/step_0000040.safetensors is truncated or corrupted"),
    ("missing state and missing replay start", 30, "4:10:1e-2",
     lambda p: ((p / STATE.format(30)).unlink(), (p / CKPT.format(20)).unlink()),
     "kept neither the optimiser state at step 30 nor the checkpoint at its phase's start 20"),
    ("run.json not JSON", 40, "4:10:1e-2", lambda p: (p / "run.json").write_text('{"config": '),
     "run.json is not valid JSON"),
    ("run.json without config", 40, "4:10:1e-2", lambda p: edit_run_json(p, lambda i: i.pop("config")),
     "run.json has no 'config' entry"),
    ("run.json with a bad config", 40, "4:10:1e-2",
     lambda p: edit_run_json(p, lambda i: i["config"]["train"]["phases"][0].update(lr=-1)),
     "lr must be a positive number, got -1"),
    ("run.json of another platform", 40, "4:10:1e-2", lambda p: edit_run_json(p, other_capability),
     "cpu OTHER under pinning"),
    ("metrics.jsonl with a cut line", 40, "4:10:1e-2",
     lambda p: (p / "metrics.jsonl").write_text((p / "metrics.jsonl").read_text()[:-9]),
     "metrics.jsonl line 12 is not valid JSON"),
    ("metrics.jsonl missing", 40, "4:10:1e-2", lambda p: (p / "metrics.jsonl").unlink(),
     "metrics.jsonl has no line for step 40"),
    ("truncated data of a kept phase", 40, "4:10:1e-2", lambda p: truncate(p / DATA.format(1)),
     "phase_1.safetensors is truncated or corrupted"),
    ("missing data of a kept phase", 10, "4:10:1e-2", lambda p: (p / DATA.format(0)).unlink(),
     "phase_0.safetensors is missing"),
]


@pytest.mark.parametrize("what, at, phases, spoil, message", SPOILT, ids=[case[0] for case in SPOILT])
def test_a_branch_of_a_spoilt_parent_leaves_nothing(parent, tmp_path, capsys, what, at, phases, spoil, message):
    spoil(parent)
    before = tree(parent)
    out = tmp_path / "br6"
    refused(capsys, ["branch", str(parent), "--at", str(at), "--phases", phases, "--out", str(out)], message)
    assert not out.exists() and tree(parent) == before
    # nothing left to resume from scratch by mistake
    refused(capsys, ["train", "--resume", str(out)], "is not a run directory")


@pytest.mark.parametrize("what, at, phases, spoil, message", SPOILT[:1] + SPOILT[6:7] + SPOILT[9:10],
                         ids=["checkpoint", "run.json", "platform"])
def test_a_refused_forced_branch_leaves_the_existing_run_as_it_was(pristine, parent, tmp_path, capsys, what, at,
                                                                    phases, spoil, message):
    out = tmp_path / "existing"
    shutil.copytree(pristine, out)
    before = tree(out)
    spoil(parent)
    refused(capsys, ["branch", str(parent), "--at", str(at), "--phases", phases, "--out", str(out), "--force"],
            message)
    assert tree(out) == before


def test_a_parent_of_another_platform_is_branched_with_the_flag(parent, tmp_path, capsys):
    edit_run_json(parent, other_capability)
    argv = ["branch", str(parent), "--at", "40", "--phases", "4:5:1e-2", "--out", str(tmp_path / "b")]
    refused(capsys, argv, "the parent run")
    err_free = main([*argv, "--allow-other-platform"])
    assert err_free == 0 and load_run(tmp_path / "b").status == "completed"
    assert load_run(tmp_path / "b").info["platform"]["cpu_capability"] != "OTHER"  # the branch records where it ran


def test_a_branch_whose_starting_state_is_gone_is_not_resumed_from_scratch(parent, tmp_path, capsys):
    from circuitpath.config import parse_phases
    from circuitpath.training.branch import _create, plan_branch

    plan = plan_branch(load_run(parent), 40, parse_phases("4:10:1e-2"), tmp_path / "b")
    _create(plan, force=False)  # created, never trained
    shutil.rmtree(tmp_path / "b" / "state")
    before = tree(tmp_path / "b")
    refused(capsys, ["train", "--resume", str(tmp_path / "b")], "but its starting state is not in")
    assert tree(tmp_path / "b") == before


# ---- switch --resume: the p = 2 runs are the branches' parents ----------------------------------
@pytest.fixture(scope="module")
def switch_done(tmp_path_factory):
    """A finished switch experiment at step 10 of 20, one seed."""
    out = tmp_path_factory.mktemp("switch") / "sw"
    switch_experiment(out, tiny_settings(seeds=(0,), switch_steps=(10,), total=20), progress=False)
    return out


@pytest.fixture
def switch_half(switch_done, tmp_path):
    """The same, as if stopped before its branch was made."""
    out = tmp_path / "sw"
    shutil.copytree(switch_done, out)
    shutil.rmtree(branch_path(out, 10, 0))
    return out


@pytest.mark.parametrize("spoil, message", [
    (lambda out: truncate(p2_path(out, 0) / CKPT.format(10)), "step_0000010.safetensors is truncated or corrupted"),
    (lambda out: truncate(p2_path(out, 0) / DATA.format(0)), "phase_0.safetensors is truncated or corrupted"),
    (lambda out: (p2_path(out, 0) / "metrics.jsonl").unlink(), "metrics.jsonl has no line for step 10"),
    (lambda out: edit_run_json(p2_path(out, 0), other_capability), "the parent run"),
    (lambda out: (out / "switch.json").write_text("{}"), "switch.json is not a switch experiment's settings"),
    (lambda out: (out / "switch.json").write_text("[1"), "switch.json is not valid JSON"),
], ids=["checkpoint", "data", "metrics", "platform", "settings", "settings JSON"])
def test_resuming_a_switch_with_a_spoilt_input_writes_nothing(switch_half, capsys, spoil, message):
    spoil(switch_half)
    before = tree(switch_half)
    refused(capsys, ["switch", "--resume", str(switch_half)], message)
    assert tree(switch_half) == before


def test_a_switch_parent_of_another_platform_goes_on_with_the_flag(switch_half, capsys):
    edit_run_json(p2_path(switch_half, 0), other_capability)
    refused(capsys, ["switch", "--allow-other-platform", "--out", str(switch_half.parent / "new")],
            "--allow-other-platform applies to --resume DIR only")
    assert main(["switch", "--resume", str(switch_half), "--allow-other-platform"]) == 0
    assert load_run(branch_path(switch_half, 10, 0)).status == "completed"


def test_the_switch_settings_read_back_are_the_ones_written(switch_done):
    written = json.loads((switch_done / "switch.json").read_text())
    assert SwitchSettings.from_dict(written).to_dict() == written


# ---- train, sweep, reproduce: flags and config files --------------------------------------------
@pytest.mark.parametrize("text, message", [
    ('{"task": {"k": 0}}', "k must be >= 1, got 0"),
    ('{"task": ', "is not valid JSON"),
    (None, "cannot read config file"),
])
def test_train_with_a_bad_config_file_writes_nothing(pristine, tmp_path, capsys, text, message):
    config = tmp_path / "config.json"
    if text is not None:
        config.write_text(text)
    refused(capsys, ["train", "--config", str(config), "--out", str(tmp_path / "new")], message)
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    shutil.copytree(pristine, existing)
    before = tree(existing)
    refused(capsys, ["train", "--config", str(config), "--out", str(existing), "--force"], message)
    assert tree(existing) == before


@pytest.mark.parametrize("argv, message", [
    (["sweep", "--seeds", "0", "--experiments", "x=9:10:1e-2"], "phase p = 9 exceeds the model's n_tokens = 4"),
    (["sweep", "--seeds", "x"], "seeds are N, N-M or a comma-separated list of them, got 'x'"),
    (["reproduce", "--figures", "9"], "unknown figure '9'"),
    (["reproduce", "--seeds", "0"], "--seeds"),
])
def test_sweep_and_reproduce_with_bad_flags_leave_an_existing_output_as_it_was(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "claims.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    refused(capsys, [*argv, "--out", str(out), "--force"], message)
    assert tree(out) == before
    refused(capsys, [*argv, "--out", str(tmp_path / "new")], message)
    assert not (tmp_path / "new").exists()
