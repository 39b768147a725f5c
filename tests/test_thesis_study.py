"""analyses/thesis_study.py: the setting and switch from the pilot, the claims per cell, resuming, bad input."""

import importlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from circuitpath.analysis.barrier import run_barrier
from circuitpath.analysis.threads import single_threaded
from circuitpath.runs import load_run

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
TINY_TASK = {"n_ctx": 6, "k": 3, "n_train": 40, "n_test": 50, "with_replacement": True}


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(ANALYSES))
    module = importlib.import_module("thesis_study")
    monkeypatch.setattr(module, "TASK", TINY_TASK)
    monkeypatch.setattr(module, "ROUND", 5)
    yield module
    sys.modules.pop("thesis_study", None)


def write_pilot(root: Path, study, accs: dict[int, list[tuple[int, float]]], chosen=True) -> Path:
    """A pilot.json choosing a tiny setting, and its p = 2 metrics: seed -> (step, test acc) lines."""
    setting = study.Setting(8, 1, 2, batch=8)
    for seed, lines in accs.items():
        where = root / f"p2_{setting.shape}" / setting.name / f"seed_{seed}"
        where.mkdir(parents=True)
        (root / f"p2_{setting.shape}" / "summary.json").write_text("{}")  # the rule reads only finished sweeps
        (where / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "test_acc": a}) + "\n" for s, a in lines))
    root.mkdir(parents=True, exist_ok=True)
    (root / "pilot.json").write_text(json.dumps({"stage1_steps": 10, "stage2_steps": 10,
                                                 "chosen": asdict(setting) if chosen else None}))
    return root / "pilot.json"


SOLVES = {0: [(0, 0.5), (4, 0.995), (6, 1.0)],  # solved from step 4
          1: [(0, 0.5), (3, 0.99), (5, 0.98), (7, 0.99), (8, 1.0)],  # dipped at 5: solved from step 7
          2: [(0, 0.5), (8, 0.7)]}  # never solved: not counted


def test_the_switch_is_where_every_solving_pilot_seed_stayed_solved_rounded_up(tmp_path, study):
    pilot = write_pilot(tmp_path, study, SOLVES)
    setting, source, _ = study.setting_from(pilot, {"lr": 3e-3})
    assert (setting.d_model, setting.batch, setting.lr) == (8, 8, 3e-3) and "lr from the command line" in source
    chosen = study.setting_from(pilot, {})[0]
    switch, rule = study.switch_from_pilot(pilot, chosen)
    assert switch == 10 and "seed_0 from 4, seed_1 from 7; 2 of 3 solved" in rule
    with pytest.raises(study.InputError, match="give --switch"):  # the pilot never trained this lr
        study.switch_from_pilot(pilot, setting)
    (tmp_path / "p2_d8_L1H2" / "summary.json").unlink()
    with pytest.raises(study.InputError, match="has not finished"):  # a pilot still running gives no switch
        study.switch_from_pilot(pilot, chosen)


def test_the_quick_tour_measures_each_claim_over_seeds_and_resumes_without_training(tmp_path, study, capsys):
    pilot, out = write_pilot(tmp_path / "pilot", study, SOLVES), tmp_path / "study"
    argv = [str(out), "--pilot", str(pilot), "--seeds", "0-1", "--other-seeds", "none", "--random-seeds", "0",
            "--switch-curve"]
    record = study.main(argv)
    printed = capsys.readouterr().out
    assert "from the pilot's choice in" in printed and "switch S = 10: the first logged step" in printed
    assert (record["steps"], record["switch"]) == (20, 10) and list(record["cells"]) == ["main", "random"]
    saved = json.loads((out / "claims.json").read_text())
    for name, seeds in (("main", [0, 1]), ("random", [0])):
        claims = saved["cells"][name]["claims"]
        assert [c["key"] for c in claims] == ["p2_solved", "scratch_memorises", "curriculum_generalises", "headline",
                                              "barrier"]
        for c in claims:
            assert c["n"] == len(seeds) and sorted(map(int, c["per_seed"])) == seeds
            assert c["count"] == sum(v["holds"] for v in c["per_seed"].values()) == len(c["seeds_holding"])
            assert c["verdict"] in ("supported", "mixed", "refuted")
    run = load_run(out / "main" / "curriculum" / "seed_1")
    assert [(ph.p, ph.steps, ph.batch_size, ph.weight_decay) for ph in run.config.train.phases] == [(2, 10, 8, 0.1),
                                                                                                   (4, 10, 8, 0.1)]
    assert run.config.model.arch == "transformer" and load_run(out / "random" / "scratch" / "seed_0").config.task.positions == "random"
    assert [row["switch"] for row in saved["switch_curve"]["rows"]] == [0, 5, 10]
    assert saved["switch_curve"]["settings"]["seeds"] == [0, 1]  # the main cell's (fewer than 8)
    control = saved["switch_curve"]["control"]  # the switch-0 row (scratch): does it fit its training set?
    acc = {str(seed): load_run(out / "switch_curve" / "switch_0" / f"seed_{seed}").final_metrics()["train_acc"]
           for seed in (0, 1)}
    assert control["train_acc"] == acc and control["fits"] == [int(s) for s, a in acc.items() if a >= 0.99]
    assert control["line"] in printed and f"on {len(control['fits'])} of 2 seeds" in control["line"]
    for row in saved["switch_curve"]["rows"]:  # every row's fit: a late switch leaves few p = 4 steps
        fit = sum(load_run(out / "switch_curve" / f"switch_{row['switch']}" / f"seed_{seed}").final_metrics()["train_acc"]
                  >= 0.99 for seed in (0, 1))
        assert control["fits_by_switch"][str(row["switch"])] == fit
        assert f"{row['switch']} ({20 - row['switch']}): {fit}/2" in control["budget_line"]
    assert control["budget_line"] in printed
    assert (out / "study.html").stat().st_size > 3_000_000  # plotly.js inline: opens offline
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()
             and p.name not in ("claims.json", "study.html", "switch_table.json")}
    again = study.main(argv)
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == files  # nothing trained or rewritten
    assert [c["count"] for c in again["cells"]["main"]["claims"]] == [c["count"] for c in record["cells"]["main"]["claims"]]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # another switch into the same OUT: its runs would answer another question
        study.main(argv + ["--switch", "5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "holds a sweep with other experiments" in err[0]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == files


def test_a_cell_grows_by_the_seeds_it_lacks_and_they_train_as_in_one_sweep(tmp_path, study, capsys):
    """--seeds 0-2 after --seeds 0-1 trains only seed 2, and seed 2's bytes are those of a study run on 0-2 at once."""
    flags = ["--pilot", str(tmp_path / "none.json"), "--d-model", "8", "--n-layers", "1", "--n-heads", "2", "--batch",
             "8", "--steps", "8", "--switch", "4", "--cells", "main"]
    grown, whole = tmp_path / "grown", tmp_path / "whole"
    study.main([str(grown), *flags, "--seeds", "0-1"])
    kept = {p: p.read_bytes() for p in (grown / "main").rglob("seed_[01]/**/*") if p.is_file()}
    capsys.readouterr()
    record = study.main([str(grown), *flags, "--seeds", "0-2"])
    assert "seeds [0, 1, 2] (2 of 6 runs to train)" in capsys.readouterr().out  # the progress across sittings
    assert kept and {p: p.read_bytes() for p in kept} == kept  # seeds 0 and 1 were not trained again
    assert all(c["n"] == 3 for c in record["cells"]["main"]["claims"])
    study.main([str(whole), *flags, "--seeds", "0-2"])
    for arm in ("scratch", "curriculum"):
        ours, theirs = (sorted((where / "main" / arm / "seed_2" / "checkpoints").iterdir()) for where in (grown, whole))
        assert [p.name for p in ours] == [p.name for p in theirs] and ours
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:  # a cell may only grow: leaving seeds out would drop their runs
        study.main([str(grown), *flags, "--seeds", "1-2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "holds seeds [0] that the cell's seeds [1, 2] leave out" in err[0]


def test_cells_run_by_separate_commands_are_all_in_claims_json_and_the_page(tmp_path, study, capsys):
    """`--cells width` after `--cells main` keeps main's claims (read back, not retrained); a cell measured at
    another switch is not kept, and a claims.json that is not the study's is refused before anything trains."""
    flags = ["--pilot", str(tmp_path / "none.json"), "--d-model", "8", "--n-layers", "1", "--n-heads", "2", "--batch",
             "8", "--steps", "8", "--switch", "4", "--seeds", "0", "--other-seeds", "0"]
    out = tmp_path / "study"
    first = study.main([str(out), *flags, "--cells", "main"])
    second = study.main([str(out), *flags, "--cells", "width"])
    printed = capsys.readouterr().out
    assert list(second["cells"]) == ["main", "width"] and "(kept from claims.json)" in printed
    assert second["cells"]["main"] == first["cells"]["main"]  # claims and wall as first measured
    assert second["cells"]["width"]["shape"] == "d64_L1H2" and second["cells"]["width"]["wall_s"] > 0
    assert json.loads((out / "claims.json").read_text())["cells"].keys() == {"main", "width"}
    page = (out / "study.html").read_text()
    assert "Cell main: d8_L1H2" in page and "Cell width: d64_L1H2" in page
    other = study.main([str(tmp_path / "other"), *flags, "--cells", "main", "--switch", "3"])
    (tmp_path / "other" / "claims.json").write_bytes((out / "claims.json").read_bytes())  # switch 4's cells
    again = study.main([str(tmp_path / "other"), *flags, "--cells", "main", "--switch", "3"])
    assert list(again["cells"]) == ["main"] and again["cells"]["main"]["claims"] == other["cells"]["main"]["claims"]
    assert "measured at another setting, steps or switch: its cells are not kept" in capsys.readouterr().out
    (out / "claims.json").write_text("[]")
    with pytest.raises(SystemExit) as stop:
        study.main([str(out), *flags, "--cells", "width"])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "is not a thesis study's claims" in err[0]


def test_a_cell_without_a_timeline_can_resume_mid_run_and_keeps_only_its_ends(tmp_path, study, monkeypatch):
    """The width and random cells save every RESUME_EVERY steps while they train (a sitting cut short loses no more)
    and keep step 0, S and N once a run completes; a sweep saved at another interval is still this cell's."""
    flags = [str(tmp_path / "study"), "--pilot", str(tmp_path / "none.json"), "--d-model", "8", "--n-layers", "1",
             "--n-heads", "2", "--batch", "8", "--steps", "12", "--switch", "4", "--cells", "random",
             "--random-seeds", "0"]
    monkeypatch.setattr(study, "RESUME_EVERY", 3)
    first = study.main(flags)
    run = load_run(tmp_path / "study" / "random" / "curriculum" / "seed_0")
    assert run.config.train.checkpoint_every == 3  # saved at 3, 6, 9 while it trained
    assert sorted(int(p.stem.split("_")[1]) for p in (run.path / "checkpoints").iterdir()) == [0, 4, 12]
    monkeypatch.setattr(study, "RESUME_EVERY", 5)  # as a sweep written before the interval changed
    files = {p: p.read_bytes() for p in (tmp_path / "study" / "random").rglob("*") if p.is_file()}
    again = study.main(flags)
    assert {p: p.read_bytes() for p in files} == files and again["cells"]["random"]["claims"] == first["cells"]["random"]["claims"]


def test_the_barrier_rebuilds_the_transformer_it_interpolates(tmp_path, study):
    """The barrier's ends are the two runs' final weights on the curriculum's p = 4 data: its loss there is the
    curriculum's own logged final training loss, so the standard transformer is rebuilt as trained."""
    out = tmp_path / "study"
    study.main([str(out), "--pilot", str(tmp_path / "none.json"), "--d-model", "8", "--n-layers", "2", "--n-heads",
                "2", "--batch", "8", "--steps", "12", "--switch", "4", "--seeds", "0", "--cells", "main"])
    scratch, curriculum = (load_run(out / "main" / arm / "seed_0") for arm in ("scratch", "curriculum"))
    with single_threaded():
        ends = run_barrier(scratch, curriculum, points=2)
        height = run_barrier(scratch, curriculum, points=11).height
    assert ends.train_loss[-1].item() == pytest.approx(curriculum.final_metrics()["train_loss"], abs=1e-5)
    shown = json.loads((out / "claims.json").read_text())["cells"]["main"]["claims"][-1]["per_seed"]["0"]["value"]
    assert shown == pytest.approx(height)


@pytest.mark.parametrize("args, message", [
    (["--cells", "main,wide"], "--cells takes names of main, width, random, got 'main,wide'"),
    (["--steps", "1"], "--steps must be at least 2"),
    (["--steps", "20", "--switch", "20"], "the switch must lie in 1 .. steps - 1 = 19, got 20"),
    (["--pilot", "MISSING"], "missing.json does not exist; give the setting by flags (missing: --d-model, --n-heads, "
                             "--n-layers)"),
    (["--pilot", "NONE"], "chose no setting; give the setting by flags"),
    (["--cells", "random", "--switch-curve"], "--switch-curve branches the main cell's setting"),
    (["--switch-curve", "--curve-seeds", "x"], "seeds are N, N-M"),
    (["--curve-seeds", "0-3"], "--curve-seeds sets the seeds of the switch-step curve: add --switch-curve"),
    (["--seeds", "none", "--other-seeds", "none", "--random-seeds", "none"], "nothing to run"),
    (["--seeds", "3-1"], "seeds are N, N-M"),
])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(tmp_path, study, capsys, args, message):
    pilot = write_pilot(tmp_path / "pilot", study, SOLVES)
    none = write_pilot(tmp_path / "none", study, {}, chosen=False)
    args = [{"MISSING": str(tmp_path / "missing.json"), "NONE": str(none)}.get(a, a) for a in args]
    with pytest.raises(SystemExit) as stop:
        study.main([str(tmp_path / "out"), "--pilot", str(pilot), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and message in err[0] and not (tmp_path / "out").exists()


def test_the_curve_takes_the_main_cell_s_first_8_seeds_or_the_seeds_given(tmp_path, study):
    flags = [str(tmp_path / "study"), "--pilot", str(tmp_path / "none.json"), "--d-model", "8", "--n-layers", "1",
             "--n-heads", "2", "--batch", "8", "--lr", "1e-2", "--steps", "20", "--switch", "10", "--cells", "main",
             "--switch-curve"]
    assert tuple(study.plan(study.parse_args(flags + ["--seeds", "0-9"])).curve.seeds) == tuple(range(8))
    assert tuple(study.plan(study.parse_args(flags + ["--curve-seeds", "3,5"])).curve.seeds) == (3, 5)
    assert not (tmp_path / "study").exists()  # a plan writes nothing
