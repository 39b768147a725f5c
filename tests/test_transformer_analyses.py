"""Every analysis that needs only hook names and positions, on tiny standard transformers (d = 8, 2 layers, 2 heads)."""

import pytest
import torch
import torch.nn.functional as F

from circuitpath import ModelConfig, RunConfig, TaskConfig, TrainConfig, parse_phases, train
from circuitpath.analysis.ablation import ablate
from circuitpath.analysis.barrier import run_barrier
from circuitpath.analysis.clusters import find_clusters, readout_points
from circuitpath.analysis.discovery.methods import Probe
from circuitpath.analysis.discovery.positions import attribution_scores, discover_positions, patching_scores
from circuitpath.analysis.flow import readout_flow
from circuitpath.analysis.models import hook_axes, readout_attention
from circuitpath.analysis.patching import patch, position_patching
from circuitpath.analysis.prediction import circuit_features
from circuitpath.analysis.trajectory import parameter_trajectory
from circuitpath.cli import main
from circuitpath.data import targets
from circuitpath.errors import InputError
from circuitpath.sweep.switching import SwitchSettings


def config(phases: str, positions: str = "first", readout="cls", seed: int = 0) -> RunConfig:
    return RunConfig(
        task=TaskConfig(n_ctx=6, k=3, n_train=48, n_test=48, seed=seed, positions=positions),
        model=ModelConfig(d_model=8, n_tokens=4, n_ctx=6, seed=seed, arch="transformer", n_layers=2, n_heads=2,
                          readout=readout),
        train=TrainConfig(phases=parse_phases(phases), log_every=10, checkpoint_every=10, dense_checkpoints=2))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A first-k run read at a CLS token, and a random-positions curriculum of the same shape."""
    root = tmp_path_factory.mktemp("transformers")
    return (train(config("4:30:1e-2"), root / "first", progress=False),
            train(config("2:20:1e-2,4:20:1e-2", positions="random", seed=1), root / "random", progress=False))


def test_readout_attention_rows_sum_to_one_per_layer_and_head(runs):
    run = runs[0]
    x = run.data().x_test[:16]
    pattern = readout_attention(run.model_at(), x)
    assert pattern.shape == (16, 2, 2, 7)  # six positions and the CLS token
    assert torch.allclose(pattern.sum(-1), torch.ones(16, 2, 2), atol=1e-5)
    flow = readout_flow(run, n=16)
    assert flow.pattern.shape == (len(run.steps), 2, 2, 7)
    relevant, spurious = flow.mass(), flow.mass(spurious=True)
    cls = flow.pattern[..., -1]
    assert torch.allclose(relevant + spurious + cls, torch.ones_like(relevant), atol=1e-5)


def test_flow_mass_follows_each_phase_truth(runs):
    run = runs[1]
    flow = readout_flow(run, n=8)
    truths = {run.config.task.relevant_positions(run.config.train.phases[p]) for p in flow.phases}
    assert set(flow.relevant) == truths
    row = flow.pattern[-1]
    assert torch.allclose(flow.mass()[-1], row[..., list(flow.relevant[-1])].sum(-1))


def test_patching_restores_clean_and_leaves_uncorrupted_positions_alone(runs):
    run = runs[0]
    model, p = run.model_at(), 4
    clean = run.data().x_test[:24]
    corrupted = clean.clone()
    corrupted[:, :3] = (clean[:, :3] + 1) % p
    labels, rival = targets(clean, p, 3), targets(corrupted, p, 3)
    by_position = patch(model, "blocks.0.hook_resid_pre", clean, corrupted, labels, rival, over=("pos",))
    assert by_position.patched.shape == (7,)
    assert torch.allclose(by_position.effect[3:], torch.zeros(4), atol=1e-6)  # never corrupted: nothing to patch
    assert by_position.effect[:3].abs().max() > 0
    whole = patch(model, "blocks.1.hook_resid_post", clean, corrupted, labels, rival)
    assert whole.patched.item() == pytest.approx(whole.clean, abs=1e-5)
    heads = patch(model, "blocks.1.attn.hook_pattern", clean, corrupted, labels, rival, over=("head_index",))
    with torch.no_grad():
        one_head = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.attn.hook_pattern", _from_clean(model, clean, 0))])
    assert heads.patched[0].item() == pytest.approx(float((one_head.gather(1, torch.stack([labels, rival], 1))
                                                           @ torch.tensor([1.0, -1.0])).mean()), abs=1e-5)


def _from_clean(model, clean, head):
    _, cache = model.run_with_cache(clean, names_filter="blocks.1.attn.hook_pattern")

    def swap(act, hook):
        act = act.clone()
        act[:, head] = cache["blocks.1.attn.hook_pattern"][:, head]
        return act
    return swap


def test_position_patching_counts_flips_per_position(runs):
    run = runs[0]
    result = position_patching(run.model_at(), run.data().x_test[:32], 4, 3)
    assert result.patched.shape == (6,) and result.labels == [f"v{t}" for t in range(6)]
    assert int(result.measured.sum()) > 0


def test_mean_ablating_a_constant_position_changes_nothing(runs):
    model = runs[0].model_at()
    x = runs[0].data().x_test[:32].clone()
    x[:, 4] = 2  # position 4 is the same in every input: its mean is its value
    y = targets(x, 4, 3)
    result = ablate(model, x, y, sets={"relevant": [0, 1, 2], "constant": [4]})
    assert hook_axes(model, result.hook) == ("pos", "d_model")
    accuracy = dict(zip(result.names, result.accuracy.tolist()))
    loss = dict(zip(result.names, result.loss.tolist()))
    assert loss["pos 4"] == pytest.approx(result.base_loss, abs=1e-5) and loss["constant"] == pytest.approx(result.base_loss, abs=1e-5)
    assert accuracy["pos 4"] == result.base_accuracy
    assert loss["relevant"] != pytest.approx(result.base_loss, abs=1e-5)


def test_barrier_ends_are_the_two_runs_losses(runs):
    a, b = runs
    result = run_barrier(a, b, points=3)
    split = b.data()
    for end, run in ((0, a), (-1, b)):
        logits = run.model_at()(split.x_train)
        assert result.train_loss[end].item() == pytest.approx(F.cross_entropy(logits, split.y_train).item(), rel=1e-5)


def test_trajectory_has_a_point_per_checkpoint(runs):
    result = parameter_trajectory({"first": runs[0], "random": runs[1]}, tsne=False)
    assert len(result.steps) == len(runs[0].steps) + len(runs[1].steps)
    assert result.pca.shape == (len(result.steps), 2) and 0 < float(result.explained.sum()) <= 1 + 1e-6


def test_clusters_of_any_hook_at_the_readout_position(runs):
    model, x = runs[0].model_at(), runs[0].data().x_test[:40]
    points = readout_points(model, x, "blocks.1.hook_resid_post")
    _, cache = model.run_with_cache(x)
    assert torch.equal(points, cache["blocks.1.hook_resid_post"][:, 6])  # the CLS token's stream
    assert readout_points(model, x, "blocks.0.attn.hook_pattern").shape == (40, 2 * 7)
    found = find_clusters(model, x, 4, 3, activation="blocks.0.hook_attn_out")
    assert found.points.shape == (40, 8) and len(found.labels) == 40
    with pytest.raises(InputError, match="z_A"):
        find_clusters(model, x, 4, 3)


def test_position_scores_are_zero_where_no_input_changes(runs):
    model, x = runs[0].model_at(), runs[0].data().x_test[:20]
    corrupted = x.clone()
    corrupted[:, :3] = x.roll(1, 0)[:, :3]  # only the relevant positions differ
    probe = Probe(x, targets(x, 4, 3), corrupted, targets(corrupted, 4, 3))
    for scores in (patching_scores(model, probe, 6), attribution_scores(model, probe, 6)):
        assert scores.shape == (6, 20)
        assert torch.equal(scores[3:], torch.zeros(3, 20))
        assert scores[:3].abs().sum() > 0


def test_discovery_scores_positions_against_each_phase_truth(runs):
    run = runs[1]
    found = discover_positions(run, n=16, steps=[0, 20, 40])
    assert found.steps == [0, 20, 40] and set(found.methods) == {"attribution", "patching", "ablation"}
    assert found.truth().shape == (3, 6) and found.truth().sum(-1).tolist() == [3, 3, 3]
    for method in found.methods:
        assert found.scores[method].shape == (3, 6) and bool((found.scores[method] >= 0).all())
        assert bool(((found.auroc(method) >= 0) & (found.auroc(method) <= 1)).all())


def test_prediction_features_per_layer_and_head(runs):
    features = circuit_features(runs[0], 30, n=24)
    for layer in range(2):
        for head in range(2):
            assert 0 <= features[f"L{layer}H{head} attention on first k"] <= 1
    assert "|blocks.1.attn.W_Q|" in features and "clusters of blocks.1.hook_resid_post" in features


def test_switch_settings_carry_the_transformer():
    settings = SwitchSettings.from_flags(seeds=[0], switch_steps=[0, 5], total=10, p2_lr=1e-2, p4_lr=1e-2, n_ctx=6,
                                         k=3, n_train=32, d_model=8, arch="transformer", n_layers=2, n_heads=2)
    model = settings.p2_config(0).model
    assert (model.arch, model.n_layers, model.n_heads) == ("transformer", 2, 2)


@pytest.mark.parametrize("args", [
    ["patch", "{run}", "--n", "16"],
    ["patch", "{run}", "--n", "16", "--corrupt", "each"],
    ["patch", "{run}", "--n", "16", "--hook", "blocks.1.attn.hook_pattern", "--over", "head_index"],
    ["ablate", "{run}", "--n", "16"],
    ["clusters", "{run}", "--n", "24", "--hook", "blocks.0.hook_resid_post"],
    ["discover", "{run}", "--n", "16", "--steps", "0,40", "--force"],
    ["llc", "{run}", "--steps", "40", "--chains", "1", "--draws", "4", "--burnin", "0", "--batch-size", "16"],
])
def test_cli_runs_on_a_transformer(runs, args, capsys):
    assert main([a.format(run=runs[1].path) for a in args]) == 0
    assert capsys.readouterr().out


@pytest.mark.parametrize("args, needs", [
    (["diagram", "{run}"], "paper's cross-attention model"),
    (["patch", "{run}", "--over", "key_pos"], "has axes ('pos', 'd_model'), not 'key_pos'"),
    (["clusters", "{run}", "--hook", "z_A"], "name a hook"),
    (["clusters", "{run}", "--n", "1"], "--n must be >= 2 (one input makes no partition to compare), got 1"),
    (["discover", "{run}", "--rule", "top-n"], "drop them"),
])
def test_cli_refuses_in_one_line(runs, args, needs, capsys):
    assert main([a.format(run=runs[0].path) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needs in err and "Traceback" not in err


def test_report_draws_a_transformer_run(runs, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["analyze", str(runs[0].path), str(runs[1].path), "--out", str(out)]) == 0
    page, printed = out.read_text(), capsys.readouterr().out
    assert "attention of the readout position" in page and "loss barrier" in printed
    assert "A standard transformer has no single query to draw a graph of" in page  # the timeline, on input positions
    assert "clusters of blocks.1.hook_resid_post at the readout position" in printed
    assert page.count("Not drawn for first, random (standard transformers)") == 2  # Figs. 3 and 4
    assert (runs[1].path / "analysis" / "discovery_report" / "positions.json").is_file()


def hand_set() -> "StandardTransformer":
    """One layer, one head, read at a CLS token that attends to position 0 alone and copies its token to the
    logits: y = x_0 (d = 12: token one-hots in dims 0-3, position one-hots in dims 4-8, the CLS's last)."""
    from circuitpath.models.transformer import StandardTransformer
    from circuitpath.models.weights import transformer_init as init_weights

    cfg = ModelConfig(d_model=12, n_tokens=4, n_ctx=4, arch="transformer", n_layers=1, n_heads=1, readout="cls")
    weights = {name: torch.zeros_like(value) for name, value in init_weights(cfg).items()}
    weights["embed.W_E"][:4, :4] = torch.eye(4)
    weights["pos_embed.W_pos"][:, 4:9] = torch.eye(5)
    for norm in ("blocks.0.ln1.w", "blocks.0.ln2.w", "ln_final.w"):
        weights[norm] = torch.ones(12)
    weights["blocks.0.attn.W_Q"][0, 8, 0] = 10.0  # the CLS position asks ...
    weights["blocks.0.attn.W_K"][0, 4, 0] = 10.0  # ... for position 0
    weights["blocks.0.attn.W_V"][0, :4, :4] = torch.eye(4)
    weights["blocks.0.attn.W_O"][0, :4, :4] = torch.eye(4)
    return StandardTransformer(cfg, weights)


def test_a_hand_set_model_reads_position_zero_alone():
    model = hand_set()
    x = torch.randint(4, (64, 4), generator=torch.Generator().manual_seed(0))
    y = x[:, 0]
    assert bool((model(x).argmax(-1) == y).all())
    pattern = readout_attention(model, x)
    assert bool((pattern[..., 0] > 0.999).all())
    result = ablate(model, x, y, sets={"relevant": [0], "spurious": [1, 2, 3]})
    effect = dict(zip(result.names, result.effect.tolist()))
    assert effect["relevant"] > 0.5 and effect["pos 0"] > 0.5
    assert max(abs(effect[f"pos {t}"]) for t in (1, 2, 3)) == 0 and effect["spurious"] == 0
    corrupted = (x + 1) % 4
    patched = patch(model, "blocks.0.hook_resid_pre", x, corrupted, y, corrupted[:, 0], over=("pos",))
    restored = patched.normalized()
    assert restored[0] > 0.99 and restored[1:4].abs().max() < 0.01
    probe = Probe(x, y, corrupted, corrupted[:, 0])
    for scores in (patching_scores(model, probe, 4), attribution_scores(model, probe, 4)):
        position = scores.abs().mean(-1)
        assert position[0] > 100 * position[1:].max()


def test_prediction_cross_validates_transformer_runs(runs):
    from circuitpath.analysis.prediction import _predict_group

    a, b = runs
    group = _predict_group("g", [a, b, a, b], [True, False, True, False], [0.5], repeats=2, folds=2, n=16,
                           progress=False)
    score = group.fractions[0].circuit
    assert 0 <= score.auroc <= 1 and "|blocks.0.attn.W_Q|" in score.features


def test_ablate_names_the_cls_token(runs, capsys):
    assert main(["ablate", str(runs[0].path), "--n", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.rsplit(None, 6)[0] for line in lines[lines.index(next(l for l in lines if l.startswith("intact"))) + 1:]]
    assert rows == [f"pos {t}" for t in range(6)] + ["cls", "first k (0-2)", "spurious (3-5)"]


@pytest.fixture(scope="module")
def one_run_page(runs, tmp_path_factory) -> str:
    """The report of the one-phase first-k run alone."""
    from circuitpath.paper.report import build_report

    path = tmp_path_factory.mktemp("one_run") / "report.html"
    build_report({"first": runs[0]}, path, n=16)
    return path.read_text()


def test_the_cls_position_is_cls_in_the_api_and_the_report(runs, one_run_page):
    from circuitpath.analysis.models import key_labels

    model, x = runs[0].model_at(), runs[0].data().x_test[:8]
    y = targets(x, 4, 3)
    assert ablate(model, x, y).names == [f"pos {t}" for t in range(6)] + ["cls"]
    assert patch(model, "blocks.0.hook_resid_pre", x, (x + 1) % 4, y, y, over=("pos",)).labels[-1] == "cls"
    assert key_labels(model.cfg)[-1] == "cls"
    page = one_run_page
    assert "pos 6" not in page and '"cls"' in page
    assert "patching each position's first-layer value (blocks.0.attn.hook_v, every head)" in page


@pytest.mark.parametrize("args, hook", [([], "patching blocks.0.hook_resid_pre over pos"),
                                        (["--corrupt", "each"], "(hook blocks.0.attn.hook_v, every head)")])
def test_patch_names_the_hook_it_patched(runs, args, hook, capsys):
    assert main(["patch", str(runs[0].path), "--n", "8", *args]) == 0
    assert hook in capsys.readouterr().out.splitlines()[0]


def test_a_transformer_report_speaks_of_its_model_and_runs(one_run_page):
    import html

    page = html.unescape(one_run_page)
    for paper_only in ("The attention of the single query", "scratch memorises, the curriculum generalises",
                       "on the paper's curriculum run", "checkpoint; starred: the relevant positions", "In the paper the scratch",
                       "where the curriculum's path turns", "In a `circuitpath reproduce` report this section tests"):
        assert paper_only not in page, paper_only
    assert "where the readout position attends, per layer and head" in page
    assert "Training and test accuracy of first (p = 4)." in page
    assert "Not drawn: the loss barrier needs two runs" in page  # Fig. 6 left out, and why
    assert "transformer: 2 layers, 2 heads, d=8" in page
    assert "are about the paper's model" in page
    assert "first: attribution (\\u003e= 0.99" in page and "\"showlegend\":true" in page  # the AUROC's legend (JSON escapes ">"), shown for one curve
