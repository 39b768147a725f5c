"""`circuitpath reproduce` on shrunk presets: every claim over seeds, JSON record, report, and bad input."""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from circuitpath.cli import main
from circuitpath.paper import presets
from circuitpath.paper.claims import PRETRAINED
from circuitpath.paper.probes import constant_inputs
from circuitpath.paper.reproduce import CLAIMS_JSON, SHOWN_SEED_RULE, VIS_SEED_RULE, run_path
from circuitpath.runs import load_run
from cli_status import exit_status
from reference import reference_forward
from test_report import CHROMIUM, render
from tiny_presets import tiny_experiments

SEEDS = 2
VIS_SEEDS = 3  # the d = 2 pipeline trains its own, more, seeds


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "runs"
    patch = pytest.MonkeyPatch()
    patch.setattr(presets, "experiments", lambda **kwargs: tiny_experiments(kwargs.get("residual", "attn_out")))
    try:
        assert main(["reproduce", "--out", str(out), "--seeds", str(SEEDS), "--vis-seeds", str(VIS_SEEDS),
                     "--n", "64"]) == 0
    finally:
        patch.undo()
    return out


def test_every_claim_is_measured_on_every_seed(reproduced):
    record = json.loads((reproduced / CLAIMS_JSON).read_text())
    assert record["seeds"] == [0, 1] and record["vis_seeds"] == [0, 1, 2] and record["figures"] == [2, 3, 4, 5, 6, 7]
    claims = {c["key"]: c for c in record["claims"]}
    pretrained = claims["vis_p2_solved"]["seeds_holding"]
    subsets = ("", PRETRAINED) if pretrained else ("",)  # no subset rows when no pretraining succeeded
    fig4 = ["clusters_p2", "clusters_p4", "finetune_solved", "clusters_p4_reset", "finetune_solved_reset"]
    assert list(claims) == [
        "spurious_updates", "first_epoch_focus", "spurious_pruned", *["focus_on_zeros" + s for s in subsets],
        "focus_on_zeros_d32", "vis_p2_solved", *[k + s for k in fig4 for s in subsets], "clusters_scratch",
        "scratch_memorises", "curriculum_generalises", "headline", "p2_solved", "barrier"]
    for claim in record["claims"]:
        d2 = claim["figure"] == 4 or claim["key"] == "focus_on_zeros"  # the d = 2 pipeline's own seeds
        seeds = pretrained if claim["key"].endswith(PRETRAINED) else range(VIS_SEEDS) if d2 else range(SEEDS)
        holds = [claim["per_seed"][str(s)]["holds"] for s in seeds]
        assert claim["n"] == len(holds) and claim["count"] == sum(holds)
        assert claim["seeds_holding"] == [s for s, h in zip(seeds, holds) if h]
        if claim["n"]:
            assert 0 <= claim["ci95"][0] <= claim["rate"] <= claim["ci95"][1] <= 1
        if claim["key"].endswith(PRETRAINED):  # the same values, over the pretrained seeds only
            whole = claims[claim["key"][: -len(PRETRAINED)]]["per_seed"]
            assert claim["per_seed"] == {s: whole[s] for s in map(str, pretrained)}
    assert record["shown_seed"] in record["seeds"] and record["shown_seed_rule"] == SHOWN_SEED_RULE
    assert record["shown_seeds"]["vis_finetune"] == (pretrained[0] if pretrained else 0)
    assert record["vis_seed_rule"] == VIS_SEED_RULE
    assert set(record["experiments"]) == {"minibatch", "scratch", "curriculum", "vis_finetune", "vis_scratch",
                                          "vis_finetune_reset"}


def test_the_reset_variant_is_its_parent_at_the_switch_with_unseen_rows_reset(reproduced):
    for seed in range(VIS_SEEDS):
        parent = load_run(run_path(reproduced, "vis_finetune", seed))
        variant = load_run(run_path(reproduced, "vis_finetune_reset", seed))
        switch = parent.config.train.phase_starts()[1]
        assert variant.config == parent.config and variant.info["variant"]["reset_rows"] == [2, 3]
        before, after, start = parent.weights_at(switch), variant.weights_at(switch), parent.weights_at(0)
        assert torch.equal(after["W_E"][:2], before["W_E"][:2]) and torch.equal(after["W_E"][2:], start["W_E"][2:])
        assert not torch.equal(before["W_E"][2:], start["W_E"][2:])  # the rows had moved during p = 2
        assert all(torch.equal(after[k], before[k]) for k in before if k != "W_E")
        assert not torch.equal(variant.weights_at(variant.steps[-1])["W_E"], parent.weights_at(parent.steps[-1])["W_E"])


def test_claim_values_agree_with_the_runs(reproduced):
    claims = {c["key"]: c for c in json.loads((reproduced / CLAIMS_JSON).read_text())["claims"]}
    for seed in range(SEEDS):
        scratch = load_run(run_path(reproduced, "scratch", seed))
        assert claims["scratch_memorises"]["per_seed"][str(seed)]["value"] == scratch.final_metrics()["test_acc"]
        # Fig. 2's fraction, recomputed from the checkpoints with the independent reference implementation
        run = load_run(run_path(reproduced, "minibatch", seed))
        tokens = constant_inputs(4, run.config.task.n_ctx)[-1:]
        epoch = run.config.task.n_train // run.config.train.phases[0].batch_size
        patterns = torch.stack([reference_forward(run.weights_at(s), tokens)["pattern"][0] for s in range(epoch + 1)])
        rises = ((patterns[1:] - patterns[:-1])[:, run.config.task.k:] > 0).any(1).float().mean().item()
        assert claims["spurious_updates"]["per_seed"][str(seed)]["value"] == pytest.approx(rises, abs=1e-6)


def test_fig3_and_fig6_values_recomputed_with_the_reference(reproduced):
    """The 0s-against-1s ratio and the barrier height, from the checkpoints with the independent implementation."""
    import torch.nn.functional as F

    from circuitpath.paper.claims import BARRIER_POINTS, PROBES

    claims = {c["key"]: c for c in json.loads((reproduced / CLAIMS_JSON).read_text())["claims"]}
    for seed in range(SEEDS):
        for key, name in (("focus_on_zeros", "vis_finetune"), ("focus_on_zeros_d32", "curriculum")):
            run = load_run(run_path(reproduced, name, seed))
            switch = run.config.train.phases[0].steps
            x = run.data(0).x_test[:PROBES]
            pattern = reference_forward(run.weights_at(switch), x)["pattern"][:, : run.config.task.k]
            first = x[:, : run.config.task.k]
            both = ((first == 0).any(1) & (first == 1).any(1))
            on = {t: ((pattern * (first == t))[both].sum(1) / (first == t)[both].sum(1)).mean() for t in (0, 1)}
            value = claims[key]["per_seed"][str(seed)]["value"]
            assert value == pytest.approx((on[0] / on[1]).item(), rel=1e-4)
            assert claims[key]["per_seed"][str(seed)]["holds"] == (value >= 2.0)
        scratch, curriculum = (load_run(run_path(reproduced, n, seed)) for n in ("scratch", "curriculum"))
        a, b = scratch.weights_at(scratch.steps[-1]), curriculum.weights_at(curriculum.steps[-1])
        split = curriculum.data()
        losses = torch.stack([F.cross_entropy(reference_forward({n: (1 - t) * a[n] + t * b[n] for n in a},
                                                                split.x_train)["logits"], split.y_train)
                              for t in torch.linspace(0, 1, BARRIER_POINTS).tolist()])
        height = (losses.max() - torch.maximum(losses[0], losses[-1])).item()
        assert claims["barrier"]["per_seed"][str(seed)]["value"] == pytest.approx(height, abs=1e-4)
        switch_line = [m for m in curriculum.metrics if m["step"] == 10 and m["phase"] == 0][-1]
        assert claims["p2_solved"]["per_seed"][str(seed)]["value"] == switch_line["test_acc"]


def test_one_figure_trains_only_its_experiments_and_prints_its_claims(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(presets, "experiments", lambda **kwargs: tiny_experiments(kwargs.get("residual", "attn_out")))
    out = tmp_path / "fig4"
    assert main(["reproduce", "--out", str(out), "--figures", "4", "--seeds", "1", "--vis-seeds", "1", "--n", "32"]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["claims.json", "report.html", "vis_finetune", "vis_finetune_reset",
                                                     "vis_scratch"]
    record = json.loads((out / CLAIMS_JSON).read_text())
    assert record["figures"] == [4] and {c["figure"] for c in record["claims"]} == {4}
    html = (out / "report.html").read_text()
    assert "Fig. 4 —" in html and "Fig. 5 —" not in html and "Circuit timeline" not in html
    assert "claims on seed 0:" in printed and "95% interval" in printed
    assert "d = 2 pipeline's figures (3-4) drawn on its seed 0: " + VIS_SEED_RULE in printed
    assert re.search(r"wall time: training \d+ s, claims \d+ s, report \d+ s", printed)
    for claim in record["claims"]:  # one table row per claim: count, rate and the Wilson interval
        low, high = claim["ci95"]
        assert re.search(rf"{claim['key']}\s+{claim['count']}/1\s+{claim['rate']:.0%}\s+\[{low:.0%}, {high:.0%}\]", printed)


def test_runs_share_initial_weights_across_experiments_of_one_shape(reproduced):
    a, b = load_run(run_path(reproduced, "scratch", 1)), load_run(run_path(reproduced, "curriculum", 1))
    assert a.weights_at(0)["W_E"].equal(b.weights_at(0)["W_E"])
    assert not a.weights_at(0)["W_E"].equal(load_run(run_path(reproduced, "scratch", 0)).weights_at(0)["W_E"])


def test_report_opens_with_the_claims_and_says_what_was_run(reproduced):
    html = (reproduced / "report.html").read_text()
    head = html[: html.index("plotly-graph-div")]
    assert "Claims, measured over seeds" in head and "What was run" in head and "circuitpath 0." in head
    assert "spurious_updates" in head and "95% interval (Wilson)" in head and "2 seeds (0, 1)" in head
    assert "3 seeds (0, 1, 2)" in head and VIS_SEED_RULE in head
    for number in range(2, 8):
        assert f"Fig. {number} —" in html
    assert html.count("class='caption'") == html.count('class="plotly-graph-div"')


def test_existing_output_needs_force(reproduced, capsys):
    before = (reproduced / CLAIMS_JSON).read_text()
    assert main(["reproduce", "--out", str(reproduced), "--seeds", "1", "--figures", "5"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert (reproduced / CLAIMS_JSON).read_text() == before


def test_help_states_the_measured_time_of_the_default_run(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = capsys.readouterr().out
    stated = re.findall(r"about (\d+) min on (\d+) cores, measured: (\d+) s", text)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    measured = re.search(r"Time on (\d+) CPU cores, final code: (\d+) s wall", readme).groups()
    assert stated == [(str(round(int(measured[1]) / 60)), measured[0], measured[1])], stated
    assert "of CPU" not in text  # no figure the code never measured


@pytest.mark.parametrize("args, message", [
    (["--residual", "prenorm"], "argument --residual: invalid choice: 'prenorm' (choose from"),
    (["--figures", "9"], "unknown figure '9'"),
    (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
    (["--batch-size", "4096"], "batch_size must be <= n_train (2048), got 4096"),
    (["--figures", "3", "--vis-seeds", "0"], "--vis-seeds must be a positive number of seeds, got 0"),
    (["--figures", "4", "--vis-n-tokens", "3"], "phase p = 4 exceeds the model's n_tokens = 3"),
    (["--figures", "4", "--vis-finetune-p", "5"], "phase p = 5 exceeds the model's n_tokens = 4"),
    (["--seeds", "0"], "--seeds must be a positive number of seeds, got 0"),
    (["--seeds", "0-3"], "argument --seeds: is a number of seeds N (seeds 0..N-1), got '0-3'"),
    (["--scratch-lr", "-1"], "lr must be a positive number, got -1.0"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert exit_status(["reproduce", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("circuitpath: error:") and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("script", ["fig2_attention_flow", "fig3_attention_over_training", "fig4_clusters",
                                    "fig5_accuracy", "fig6_barrier", "fig7_trajectory"])
def test_figure_scripts_read_the_runs_reproduce_drew(reproduced, script, monkeypatch, capsys):
    monkeypatch.chdir(reproduced.parent)  # the scripts default to ./runs
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "analyses"))
    sys.modules.pop(script, None)
    path = importlib.import_module(script).main([])
    assert path.exists() and path.resolve().parent == reproduced.resolve()
    shown = json.loads((reproduced / CLAIMS_JSON).read_text())["shown_seeds"]
    printed = capsys.readouterr().out
    assert "(the seed reproduce drew)" in printed
    for name in presets.FIGURES[int(script[3])].experiments:  # each experiment's own shown seed
        assert f"{name}/seed_{shown[name]}" in printed
    sys.modules.pop(script, None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_report_renders_the_claims_table_and_every_figure(reproduced):
    html = (reproduced / "report.html").read_text()
    dom, console_errors = render(reproduced / "report.html")
    assert not console_errors, console_errors
    figures = html.count('class="plotly-graph-div"')
    assert len(re.findall(r'<svg class="main-svg"', dom)) >= figures > 10
    table = dom[dom.index("<table class=\"claims\">"): dom.index("</table>", dom.index("<table class=\"claims\">"))]
    claims = json.loads((reproduced / CLAIMS_JSON).read_text())["claims"]
    assert table.count("<tr>") == 1 + len(claims) >= 1 + 17 and "Wilson" in table  # header and one row per claim
    assert any(f'class="{verdict}">{verdict}<' in table for verdict in ("supported", "mixed", "refuted"))
