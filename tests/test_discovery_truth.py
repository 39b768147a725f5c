"""Scoring against the truth: AUROC, precision@k and Spearman with ties, and the pruning story."""

import math

import pytest
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from circuitpath.analysis.discovery import DiscoveryConfig, DiscoveryTimeline, ModelGraph, pruning_story
from circuitpath.analysis.discovery.truth import auroc, faithfulness_counts, first_reaching, precision_at_k, spearman
from circuitpath.errors import InputError


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_sklearns_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 4, (3, 9), generator=generator).float()  # many ties
    for row in scores:
        assert math.isclose(float(auroc(row, 4)), roc_auc_score([1] * 4 + [0] * 5, row.numpy()), abs_tol=1e-6)
    assert auroc(scores, 4).shape == (3,)


def test_ties_never_score_as_found():
    flat = torch.zeros(12)
    assert auroc(flat, 5) == 0.5 and math.isclose(float(precision_at_k(flat, 5)), 5 / 12, abs_tol=1e-6)
    assert precision_at_k(torch.tensor([3.0, 2.0, 2.0, 2.0, 0.0]), 2) == pytest.approx(0.5 + 0.5 / 3)
    assert precision_at_k(torch.tensor([0.0, 0.0, 1.0, 2.0]), 2) == 0.0
    with pytest.raises(InputError, match="k must be between 1 and 3"):
        auroc(flat[:4], 4)


def test_spearman_is_scipys():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, generator=generator), torch.randint(0, 5, (12,), generator=generator).float()
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0) and math.isnan(spearman(a, torch.zeros(12)))


def test_first_step_reaching_a_level_and_faithfulness_counts():
    assert first_reaching([0, 10, 20], torch.tensor([0.5, 0.995, 0.9])) == 10
    assert first_reaching([0, 10], torch.tensor([0.5, 0.98])) is None
    assert faithfulness_counts(20) == [0, 1, 2, 3, 4, 6, 8, 12, 16, 20]


def _timeline(values: list[list[float]], phases: list[int]) -> DiscoveryTimeline:
    """A timeline whose value sites hold `values` (one row per step) and whose other sites are 0."""
    graph = ModelGraph(n_ctx=len(values[0]), d_mlp=2)
    sites = torch.zeros(len(values), graph.n_sites)
    sites[:, graph.slices["value"]] = torch.tensor(values)
    steps = [10 * i for i in range(len(values))]
    return DiscoveryTimeline(run="r", steps=steps, k=2, graph=graph, config=DiscoveryConfig(methods=("patching",)),
                             phases=phases, phase_switches=[], accuracy=torch.zeros(len(values)),
                             sites={"patching": sites}, magnitude={"patching": sites.abs()}, totals={"patching": torch.zeros(len(values))}, counts=[0],
                             faithfulness={"patching": torch.zeros(len(values), 1)})


def test_pruning_story_counts_strengthened_spurious_edges():
    # positions 0, 1 summed; 2, 3 spurious. Shares: step 0 even; 10: spurious 2 takes half, 3 none;
    # 20: summed grow to 3/8 each, 3 back to 1/8; 30: only position 3 grows, across a phase switch (left out)
    story = pruning_story(_timeline([[1, 1, 1, 1], [1, 1, 2, 0], [3, 3, 1, 1], [3, 3, 1, 5]], [0, 0, 0, 1]), tol=0.01)
    assert story.strengthened.tolist() == [[False, False, True, False], [True, True, False, True], [False, False, False, True]]
    assert story.weakened.tolist()[0] == [False, False, False, True]
    fraction = story.spurious_fraction
    assert fraction[0] == 1.0 and fraction[1] == pytest.approx(1 / 3) and math.isnan(fraction[2])
    assert story.last_spurious_strengthened == 20
    assert pruning_story(_timeline([[1, 1, 0, 0], [2, 2, 0, 0]], [0, 0])).last_spurious_strengthened is None
    with pytest.raises(InputError, match="tol must be in"):
        pruning_story(_timeline([[1, 1, 0, 0], [2, 2, 0, 0]], [0, 0]), tol=1.5)
