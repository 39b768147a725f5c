"""analyses/thesis_circuit.py on a tiny thesis study trained here: outputs, a seed lacking a checkpoint, bad input."""

import importlib
import itertools
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from circuitpath.runs import load_run
from process_group import ended_within, own_group

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
TINY_TASK = {"n_ctx": 6, "k": 3, "n_train": 48, "n_test": 48, "with_replacement": True}
STEPS, SWITCH, EVERY = 60, 30, 15  # checkpoints every 3 steps (thesis_study: steps // 20)


def train_tiny(out: Path, *cells: str) -> None:
    """analyses/thesis_study.py on the tiny task: a 2-layer 2-head transformer, the given cell flags."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ANALYSES))
        study = importlib.import_module("thesis_study")
        patch.setattr(study, "TASK", TINY_TASK)
        study.main([str(out), "--pilot", str(out.parent / "none.json"), "--d-model", "16", "--n-layers", "2",
                    "--n-heads", "2", "--batch", "16", "--lr", "1e-2", "--steps", str(STEPS), "--switch",
                    str(SWITCH), *cells])
        sys.modules.pop("thesis_study", None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny main cell: seeds 0-2, both arms."""
    out = tmp_path_factory.mktemp("thesis") / "study"
    train_tiny(out, "--seeds", "0-2", "--cells", "main")
    return out


@pytest.fixture(scope="module")
def with_width(trained):
    """The same study with its width cell (d = 64 here), which keeps only step 0, the switch and the end."""
    train_tiny(trained, "--other-seeds", "0-1", "--cells", "width")
    return trained


@pytest.fixture
def circuit(monkeypatch):
    monkeypatch.syspath_prepend(str(ANALYSES))
    module = importlib.import_module("thesis_circuit")
    yield module
    sys.modules.pop("thesis_circuit", None)


def pairwise_auroc(scores: list[float], relevant: set[int]) -> float:
    """P(a relevant position outscores a spurious one), ties counting half."""
    pairs = [(scores[r], scores[s]) for r, s in itertools.product(relevant, set(range(len(scores))) - relevant)]
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def test_the_circuit_over_training_is_read_per_seed_and_summed_up_over_seeds(trained, circuit, monkeypatch, capsys):
    monkeypatch.setattr(circuit, "COST", -1.0)  # every head counts as a p = 2 head: the set is all heads
    record = circuit.main([str(trained), "--seeds", "0-2", "--every", str(EVERY), "--n", "48"])
    printed = capsys.readouterr().out
    assert record["timelines"] == {"scratch": [0, 15, 30, 45, 60], "curriculum": [0, 15, 30, 45, 60]}
    assert (record["switch"], record["steps"]) == (SWITCH, STEPS)
    assert json.loads((trained / "circuit.json").read_text())["seeds"] == [0, 1, 2]
    assert (trained / "circuit.html").stat().st_size > 3_000_000 and "carry-over (curriculum)" in printed
    for arm in ("scratch", "curriculum"):
        arm_record = record["arms"][arm]
        per_seed, summary = arm_record["per_seed"], arm_record["summary"]
        assert list(per_seed) == [0, 1, 2] and not arm_record["skipped"]
        for seed, result in per_seed.items():  # the AUROC is what the scores give, against the first k = 3
            for method, scores in result["scores"].items():
                assert result["auroc"][method][0] == pytest.approx(pairwise_auroc(scores[0], {0, 1, 2}))
            assert torch.tensor(result["mass"]).shape == (5, 2, 2)
            assert [(c["step"], c["p"]) for c in result["clusters"]] == (
                [(30, 2), (60, 4)] if arm == "curriculum" else [(30, 4), (60, 4)])
        for method in summary["auroc"]:
            assert summary["auroc"][method][2] == statistics.median(per_seed[s]["auroc"][method][2] for s in per_seed)
        assert summary["clusters"][0]["ones"] == [s for s in per_seed if per_seed[s]["clusters"][0]["ones"]]
    run = load_run(trained / "main" / "curriculum" / "seed_1")
    carry = record["arms"]["curriculum"]["per_seed"][1]["carry_over"]
    assert carry["p2_heads"] == ["L0H0", "L0H1", "L1H0", "L1H1"] and carry["other_heads"] == []
    labels = run.data(1).y_test[:48]
    ablated = carry["base_p4_acc"] - carry["lost"]["p2_heads"]
    # every head mean-ablated: the readout no longer sees the input, so it says one answer to all
    assert any(ablated == pytest.approx(float((labels == y).float().mean())) for y in range(4))


def test_the_p2_heads_are_those_whose_ablation_costs_p2_accuracy_and_the_control_is_as_many_others(trained, circuit,
                                                                                                  monkeypatch):
    run = load_run(trained / "main" / "curriculum" / "seed_0")
    costs = circuit.carry_over(run, SWITCH, STEPS, 48)["costs"]
    cost = sorted(costs.values())[-1]  # the dearest head (and any tied with it)
    carried = sorted(h for h, c in costs.items() if c >= cost)
    monkeypatch.setattr(circuit, "COST", cost)
    result = circuit.carry_over(run, SWITCH, STEPS, 48)
    assert sorted(result["p2_heads"]) == carried and len(result["other_heads"]) == min(len(carried), 4 - len(carried))
    rest = [h for h in costs if h not in carried and h not in result["other_heads"]]
    assert all(costs[o] <= costs[r] for o in result["other_heads"] for r in rest)  # the cheapest of the others
    assert set(result["lost"]) == {"p2_heads"} | ({"other_heads"} if result["other_heads"] else set())


def test_a_seed_lacking_a_checkpoint_is_left_out_with_its_reason(trained, circuit, tmp_path, capsys):
    copy = tmp_path / "study"
    shutil.copytree(trained / "main", copy / "main")
    (copy / "main" / "scratch" / "seed_2" / "checkpoints" / "step_0000045.safetensors").unlink()
    record = circuit.main([str(copy), "--seeds", "1-2", "--every", str(EVERY), "--n", "16"])
    assert list(record["arms"]["scratch"]["per_seed"]) == [1] and record["arms"]["scratch"]["summary"]["seeds"] == [1]
    assert "has no checkpoint at step 45" in record["arms"]["scratch"]["skipped"][2]
    assert list(record["arms"]["curriculum"]["per_seed"]) == [1, 2]
    assert "seed 2 left out:" in capsys.readouterr().out
    masses = torch.tensor([record["arms"]["curriculum"]["per_seed"][s]["mass"] for s in (1, 2)])
    assert torch.tensor(record["arms"]["curriculum"]["summary"]["mass"]).allclose(masses.mean(0))  # of 2: the mean


def test_a_stopped_reading_resumes_from_the_runs_it_had_read(trained, circuit, tmp_path, capsys):
    """Each run's reading is saved as it ends and used again by a later command, but only when read with the same
    settings: another --n reads every run again."""
    copy = tmp_path / "study"
    shutil.copytree(trained / "main", copy / "main")
    flags = [str(copy), "--seeds", "0-1", "--every", str(EVERY), "--n", "16"]
    first = circuit.main(flags)
    saved = copy / "circuit_reads" / "main" / "curriculum" / "seed_1.json"
    reading = json.loads(saved.read_text())
    assert reading["reading"]["auroc"] == first["arms"]["curriculum"]["per_seed"][1]["auroc"]
    reading["reading"]["stays_from"]["patching"] = 12345  # a mark: only a saved reading carries it
    saved.write_text(json.dumps(reading))
    capsys.readouterr()
    again = circuit.main(flags)
    printed = capsys.readouterr().out
    assert printed.count("(saved by an earlier command)") == 4 and again["saved_earlier"] == 4
    assert "(4 of 4 runs' readings saved by an earlier command)" in printed and first["saved_earlier"] == 0
    assert again["arms"]["curriculum"]["per_seed"][1]["stays_from"]["patching"] == 12345
    assert again["arms"]["scratch"] == first["arms"]["scratch"]
    other = circuit.main(flags[:-1] + ["24"])
    assert "(saved by an earlier command)" not in capsys.readouterr().out
    assert other["arms"]["curriculum"]["per_seed"][1]["stays_from"]["patching"] != 12345
    saved.write_text("{not json")  # a reading that is not one is read again
    assert circuit.main(flags[:-1] + ["24"])["saved_earlier"] == 3 and json.loads(saved.read_text())["key"]


def test_a_cell_that_keeps_only_its_ends_is_read_at_them_beside_the_main_cell(with_width, circuit, capsys):
    main_json = with_width / "circuit.json"  # the main cell's, if an earlier test wrote it
    before = main_json.read_bytes() if main_json.exists() else None
    record = circuit.main([str(with_width), "--cell", "width", "--n", "48"])  # --every: the cell's N
    assert record["cell"] == "width"
    assert record["timelines"] == {"scratch": [0, STEPS], "curriculum": [0, SWITCH, STEPS]}
    assert json.loads((with_width / "circuit_width.json").read_text())["seeds"] == [0, 1]
    assert "(width cell)" in (with_width / "circuit_width.html").read_text()
    assert (main_json.read_bytes() if main_json.exists() else None) == before
    for arm, steps in (("scratch", [(STEPS, 4)]), ("curriculum", [(SWITCH, 2), (STEPS, 4)])):
        per_seed = record["arms"][arm]["per_seed"]
        assert list(per_seed) == [0, 1] and not record["arms"][arm]["skipped"]
        assert all([(c["step"], c["p"]) for c in r["clusters"]] == steps for r in per_seed.values())
        assert all(torch.tensor(r["mass"]).shape[0] == len(record["timelines"][arm]) for r in per_seed.values())
    carry = record["arms"]["curriculum"]["per_seed"][0]["carry_over"]
    assert set(carry["costs"]) == {"L0H0", "L0H1", "L1H0", "L1H1"}
    assert "p = 4 test acc lost at N = 60" in capsys.readouterr().out


def test_the_page_names_the_truth_of_the_cell_it_shows(circuit):
    assert circuit.truth_words("random") == "each seed's drawn positions"
    assert circuit.truth_words("main") == circuit.truth_words("width") == "the first k positions"


def test_its_reading_processes_end_when_the_command_is_killed_outright(trained, tmp_path):
    """SIGKILL leaves a process pool no time to shut down: its readers must see their parent gone and exit, not
    wait for work forever. They are found by their process group, which the command leads."""
    copy = tmp_path / "study"
    shutil.copytree(trained / "main", copy / "main")
    with own_group([sys.executable, str(ANALYSES / "thesis_circuit.py"), str(copy), "--seeds", "0-2", "--every",
                    str(EVERY), "--jobs", "2"], stdout=subprocess.PIPE, text=True) as command:
        if not any(line.startswith("  read 1/6") for line in command.stdout):
            pytest.fail("the command ended before its first reading")
        command.kill()
        command.wait()  # a zombie still counts in its group
        assert ended_within(command.pid, 20), "a reading process outlived the killed command by 20 s"
    assert len(list((copy / "circuit_reads" / "main").glob("*/seed_*.json"))) >= 1


@pytest.mark.parametrize("args, message", [
    (["--cell", "wide"], "--cell must be one of main, width, random, got 'wide'"),
    (["--cell", "random"], "has no random cell"),
    (["--every", "4"], "--every must be a positive multiple of the checkpoint interval 3, got 4"),
    (["--every", "0"], "--every must be a positive multiple of the checkpoint interval 3, got 0"),
    (["--every", "15", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    (["--seeds", "2-5"], "seed 3 is not in the sweep"),
    (["--seeds", "x"], "seeds are N, N-M"),
    (["NOMAIN"], "has no main cell"),
    (["--cell", "width", "--every", "15"], "--every must be a positive multiple of the checkpoint interval 60, got 15"),
])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(with_width, circuit, tmp_path, capsys, args,
                                                                  message):
    trained = with_width
    args = [str(tmp_path) if a == "NOMAIN" else a for a in args]
    out = [] if args and args[0] == str(tmp_path) else [str(trained)]
    before = sorted(p.name for p in trained.iterdir())
    with pytest.raises(SystemExit) as stop:
        circuit.main(out + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0]
    assert sorted(p.name for p in trained.iterdir()) == before and not list(tmp_path.iterdir())
