"""The graph discovery scores: its structure, and the forward passes over its sites against the hooked model."""

import networkx as nx
import pytest
import torch

from circuitpath import CrossAttentionTransformer, ModelConfig, TaskConfig, make_split
from circuitpath.analysis.ablation import ablate
from circuitpath.analysis.discovery import ModelGraph
from circuitpath.analysis.discovery.forward import (
    TokenAttention,
    attention_inputs,
    embed,
    forward_from_attention,
    forward_sites,
    late_gradients,
    metric_gradient,
    run_kept,
)
from circuitpath.analysis.discovery.graph import GROUPS, LOGITS, site_activations
from circuitpath.analysis.patching import METRICS


@pytest.fixture(scope="module", params=["attn_out", "normalized"])
def model_and_inputs(request):
    """An untrained model of each residual: z_O = z_A + MLP(z̄_A), or z̄_A + MLP(z̄_A)."""
    model = CrossAttentionTransformer(ModelConfig(d_model=16, n_ctx=8, seed=3, residual=request.param)).eval()
    return model, make_split(TaskConfig(n_ctx=8, k=3, n_train=100), 4).x_test[:300]


def test_nodes_and_edges_follow_the_computation():
    graph = ModelGraph(n_ctx=12, d_mlp=128)
    assert len(graph.nodes) == 2 * 12 + 128 + 4 and len(graph.edges) == 2 * 12 + 2 * 128 + 3
    g = graph.to_networkx()
    assert nx.is_directed_acyclic_graph(g)
    assert all(nx.has_path(g, node, LOGITS) for node in g)  # nothing dangles
    assert set(g.predecessors("attn")) == {f"v{t}" for t in range(12)} | {f"a{t}" for t in range(12)}
    assert set(g.successors("attn")) == {f"n{j}" for j in range(128)} | {"resid"}
    assert set(g.predecessors(LOGITS)) == {"mlp", "resid"}
    # every site is read by a node or an edge, and only the neurons' inputs by an edge alone
    nodes = {n.site for n in graph.nodes if n.site is not None}
    edges = {e.site for e in graph.edges}
    assert nodes | edges == set(range(graph.n_sites))
    assert edges - nodes == set(range(graph.slices["neuron_in"].start, graph.slices["neuron_in"].stop))
    assert nodes - edges == {graph.site("attention")}  # z_A reaches the neurons and the residual: no single edge


def test_site_forward_pass_is_the_hooked_model(model_and_inputs):
    model, x = model_and_inputs
    logits, cache = model.run_with_cache(x)
    expected = site_activations(cache)  # the residual: hook_resid_post - hook_mlp_out
    for name, (pattern, values) in {"tables": (TokenAttention.of(model, x).pattern, TokenAttention.of(model, x).values()),
                                    "embeddings": attention_inputs(model, embed(model, x))}.items():
        got_logits, acts = forward_sites(model, pattern, values)
        assert torch.allclose(got_logits, logits, atol=1e-5), name
        for group in GROUPS:
            assert torch.allclose(acts[group], expected[group], atol=1e-5), (name, group)
    assert torch.allclose(TokenAttention.of(model, x).z_attn(), cache["blocks.0.hook_attn_out"], atol=1e-5)
    carried = {"attn_out": "blocks.0.hook_attn_out", "normalized": "blocks.0.ln2.hook_normalized"}[model.cfg.residual]
    assert torch.allclose(expected["residual"], cache[carried], atol=1e-5)
    assert ModelGraph.of(model).residual == model.cfg.residual


@pytest.mark.parametrize("metric", ["logit_diff", "loss"])
def test_hand_derived_site_gradients_are_autograds(model_and_inputs, metric):
    model, x = model_and_inputs
    generator = torch.Generator().manual_seed(1)
    labels = [torch.randint(0, model.cfg.n_tokens, (x.shape[0],), generator=generator) for _ in range(2)]
    labels[1][:50] = labels[0][:50]  # rows whose corrupted answer is the clean one (logit diff 0)
    of_logits = lambda logits: METRICS[metric](logits, *labels)
    z_attn = TokenAttention.of(model, x).z_attn()
    with torch.no_grad():
        logits, acts, grads = late_gradients(model, z_attn, metric_gradient(metric, *labels))
    expected_logits, expected_acts = forward_from_attention(model, z_attn.clone().requires_grad_(True))
    late = list(expected_acts)
    expected = dict(zip(late, torch.autograd.grad(of_logits(expected_logits), [expected_acts[g] for g in late])))
    assert torch.allclose(logits, expected_logits, atol=1e-5)
    for group in late:
        assert torch.allclose(acts[group], expected_acts[group], atol=1e-5), group
        assert torch.allclose(grads[group], expected[group], rtol=1e-4, atol=1e-8), group


def test_keeping_sites_matches_the_ablation_engine(model_and_inputs):
    model, x = model_and_inputs
    graph = ModelGraph.of(model)
    logits, cache = model.run_with_cache(x)
    acts = site_activations(cache)
    keep = torch.ones(4, graph.n_sites, dtype=torch.bool)
    keep[1, graph.site("value", 2)] = False
    keep[2, graph.site("neuron", 7)] = False
    keep[3, graph.site("attention")] = False
    kept = run_kept(model, graph, acts, keep)
    assert torch.allclose(kept[0], logits, atol=1e-5)
    y = x[:, :3].sum(1) % 4
    for row, (hook, over, index) in enumerate([("blocks.0.attn.hook_v", ("key_pos",), 2),
                                               ("blocks.0.mlp.hook_post", ("d_mlp",), 7),
                                               ("blocks.0.hook_attn_out", (), 0)], start=1):
        expected = ablate(model, x, y, hook=hook, over=over, method="mean").loss[index]
        got = torch.nn.functional.cross_entropy(kept[row], y)
        assert torch.isclose(got, expected, atol=1e-5), hook
    nothing = run_kept(model, graph, acts, torch.zeros(1, graph.n_sites, dtype=torch.bool))[0]
    assert torch.allclose(nothing, nothing[:1].expand_as(nothing), atol=1e-5)  # no input reaches the logits


def kept_one_by_one(model, acts, graph, keep):
    """The plain reading of mean-ablating the sites a mask leaves out: one mask at a time, in forward order."""
    block, means, out = model.blocks[0], {group: value.mean(0) for group, value in acts.items()}, []
    for row in keep:
        def pick(group, value):
            kept = row[graph.slices[group]].float()
            kept = kept[:, None] if group == "value" else kept  # value: [key_pos] over [batch, key_pos, d_model]
            return kept * value + (1 - kept) * means[group]
        z_attn = pick("attention", (pick("pattern", acts["pattern"])[..., None] * pick("value", acts["value"])).sum(1))
        z_bar = block.ln2(z_attn)
        post = pick("neuron", torch.nn.functional.gelu(pick("neuron_in", z_bar @ block.mlp.W_in + block.mlp.b_in)))
        mlp = pick("mlp", post @ block.mlp.W_out + block.mlp.b_out)
        out.append((pick("residual", block.residual(z_attn, z_bar)) + mlp) @ model.W_U)
    return torch.stack(out)


def test_keeping_sites_of_many_masks_is_keeping_them_one_by_one(model_and_inputs):
    model, x = model_and_inputs
    graph = ModelGraph.of(model)
    acts = site_activations(model.run_with_cache(x)[1])
    generator = torch.Generator().manual_seed(4)
    keep = torch.rand(12, graph.n_sites, generator=generator) < 0.6
    keep[6:] = keep[:6]  # masks that share their sites before the neurons and differ after
    keep[6:, graph.slices["neuron"].start:] = torch.rand(6, graph.n_sites - graph.slices["neuron"].start, generator=generator) < 0.5
    with torch.no_grad():
        expected = kept_one_by_one(model, acts, graph, keep)
    for max_batch in (10_000, 300):  # every distinct choice in one pass, or one a pass
        assert torch.allclose(run_kept(model, graph, acts, keep, max_batch=max_batch), expected, atol=1e-5)


def test_position_scores_add_both_ways_a_position_reaches_z_attn():
    graph = ModelGraph(n_ctx=3, d_mlp=2)
    sites = torch.zeros(graph.n_sites)
    sites[graph.slices["value"]] = torch.tensor([1.0, -2.0, 0.0])
    sites[graph.slices["pattern"]] = torch.tensor([-0.5, 0.0, 0.25])
    assert graph.position_scores(sites).tolist() == [1.5, 2.0, 0.25]


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
def test_ablation_scores_are_what_ablate_measures(model_and_inputs, method):
    from circuitpath.analysis.discovery import Probe, score_sites

    model, x = model_and_inputs
    y = x[:, :3].sum(1) % 4
    graph = ModelGraph.of(model)
    sites = score_sites(model, "ablation", Probe.shuffled(x, y), ablation=method, seed=5).sites
    for group, hook, over in (("value", "blocks.0.attn.hook_v", ("key_pos",)), ("neuron", "blocks.0.mlp.hook_post", ("d_mlp",)),
                              ("mlp", "blocks.0.hook_mlp_out", ())):
        expected = ablate(model, x, y, hook=hook, over=over, method=method, generator=torch.Generator().manual_seed(5))
        assert torch.allclose(sites[graph.slices[group]], expected.loss - expected.base_loss, atol=1e-5), group


def test_replacing_each_site_is_the_patching_engine(model_and_inputs):
    from circuitpath.analysis.discovery import Probe
    from circuitpath.analysis.discovery.methods import ProbeRuns, _replace_each_site
    from circuitpath.analysis.patching import axis_masks
    from circuitpath.analysis.replacing import RESID_POST, run_replaced

    model, x = model_and_inputs
    runs = ProbeRuns(model, Probe.shuffled(x, x[:, :3].sum(1) % 4, seed=2))
    (_, cache), (_, corrupted) = runs.clean, runs.corrupted
    replacements = site_activations(corrupted)
    got = _replace_each_site(runs, replacements)
    for (group, (hook, over)), logits in zip(GROUPS.items(), got, strict=True):
        replacement = replacements[group]
        if group == "residual":  # hook_resid_post with the residual path's part swapped
            replacement = cache[RESID_POST] - site_activations(cache)["residual"] + replacement
        masks = axis_masks(cache[hook].shape[1:], hook, over)
        expected = run_replaced(model, hook, runs.probe.clean, cache, replacement, masks)
        assert logits.shape == expected.shape and torch.allclose(logits, expected, atol=1e-5), group
