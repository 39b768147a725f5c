"""Claims: the Wilson interval, verdicts, and the probes each figure's number is read from."""

import pytest
import torch

from circuitpath.analysis.stats import wilson_interval as wilson
from circuitpath.paper.claims import PRETRAINED, Claim, among
from circuitpath.paper.probes import UpdateChanges, constant_inputs, first_k_inputs, token_focus


@pytest.mark.parametrize("successes, n, low, high", [
    (0, 8, 0.0, 0.3244), (8, 8, 0.6756, 1.0), (4, 8, 0.2152, 0.7848), (14, 32, 0.2817, 0.6067), (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_matches_published_values(successes, n, low, high):
    got = wilson(successes, n)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("n", range(1, 40))
def test_the_interval_holds_the_rate_at_the_ends(n):
    for successes in (0, n):
        low, high = wilson(successes, n)
        assert low <= successes / n <= high


def test_a_claim_among_the_pretrained_seeds_keeps_their_values_only():
    whole = Claim("clusters_p4", 4, "paper", "test")
    for seed, value in enumerate([16, 1, 16, 3]):
        whole.add(seed, value, value == 16, f"{value} clusters")
    sub = among(whole, [1, 2, 7])  # seed 7 was not measured: left out
    assert sub.key == "clusters_p4" + PRETRAINED and sub.figure == 4 and sub.paper == whole.paper
    assert sub.values == {1: 1.0, 2: 16.0} and sub.holds == {1: False, 2: True} and sub.shown[2] == "16 clusters"
    assert (sub.count, sub.n) == (1, 2) and "pretraining succeeded" in sub.test


def test_verdict_follows_the_interval():
    def claim(count, n):
        c = Claim("k", 5, "paper", "test")
        for seed in range(n):
            c.add(seed, float(seed < count), seed < count)
        return c

    assert claim(7, 8).verdict == "supported" and claim(1, 8).verdict == "refuted"
    assert claim(4, 8).verdict == claim(6, 8).verdict == "mixed"
    assert claim(3, 8).seeds_holding == [0, 1, 2] and claim(3, 8).rate == 3 / 8
    record = claim(2, 4).to_dict()
    assert record["count"] == 2 and record["n"] == 4 and record["per_seed"]["3"]["holds"] is False
    back = Claim.from_dict(record)
    assert back.to_dict() == record and back.holds == claim(2, 4).holds  # the record reads back as the claim


def test_paper_inputs():
    assert constant_inputs(4, 8)[3].tolist() == [3] * 8
    x = first_k_inputs(2, 5, 12)
    assert x.shape == (32, 12) and len({tuple(r) for r in x.tolist()}) == 32 and x[:, 5:].eq(0).all()
    assert first_k_inputs(4, 5, 12).shape == (1024, 12)


def test_token_focus_splits_attention_by_token():
    tokens = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    pattern = torch.tensor([[0.3, 0.1, 0.1, 0.3, 0.1, 0.1],   # first k = 3: zero at 0 (0.3), ones at 1, 2 (0.1 each)
                            [0.2, 0.2, 0.2, 0.2, 0.1, 0.1],   # no zero among the first 3: skipped
                            [0.2, 0.4, 0.1, 0.1, 0.1, 0.1]])  # zeros at 0, 1 (mean 0.3), one at 2 (0.1)
    focus = token_focus(pattern, tokens, k=3)
    assert focus.inputs == 2
    assert focus.on_zero == pytest.approx(0.3) and focus.on_one == pytest.approx(0.1) and focus.ratio == pytest.approx(3)


def test_update_changes_flags_updates_that_raise_a_spurious_position():
    pattern = torch.tensor([[0.25, 0.25, 0.25, 0.25],
                            [0.30, 0.30, 0.20, 0.20],   # spurious (positions 2, 3) fall
                            [0.30, 0.25, 0.25, 0.20],   # position 2 rises
                            [0.50, 0.40, 0.05, 0.05]])
    changes = UpdateChanges([0, 1, 2, 3], pattern, k=2)
    assert changes.spurious_increased.tolist() == [False, True, False]
    assert changes.first_k_mass.tolist() == pytest.approx([0.5, 0.6, 0.55, 0.9])
