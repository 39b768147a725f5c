"""Fine-tune variants: branches of a p = 2 run at its switch, the unseen token rows reset on request."""


import pytest
import torch

from circuitpath import train
from circuitpath.config import Phase
from circuitpath.errors import ConfigError
from circuitpath.paper.variants import RESET_OWN, Variant, make_variants, unseen_tokens
from conftest import tiny_config


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("parents")
    return [train(tiny_config("2:20:1e-2,4:10:1e-2", seed=s), root / f"seed_{s}", progress=False) for s in (0, 1)]


def test_tokens_never_seen_before_the_switch_are_the_rows_above_p(parents):
    assert unseen_tokens(parents[0]) == [2, 3] and unseen_tokens(parents[0], phase=1) == []


def test_reset_puts_back_the_initial_rows_of_unseen_tokens_only(parents, tmp_path):
    made = make_variants(parents, RESET_OWN, [tmp_path / f"seed_{s}" for s in (0, 1)], progress=False)
    for parent, variant in zip(parents, made):
        switch = parent.config.train.phase_starts()[1]
        before, initial, after = parent.weights_at(switch), parent.weights_at(0), variant.weights_at(switch)
        assert not torch.equal(before["W_E"][2:], initial["W_E"][2:])  # the rows had moved during p = 2
        assert torch.equal(after["W_E"][2:], initial["W_E"][2:]) and torch.equal(after["W_E"][:2], before["W_E"][:2])
        assert all(torch.equal(after[k], before[k]) for k in before if k != "W_E")
        assert variant.config == parent.config  # the run's own fine-tune: the same phases
        assert variant.info["variant"] == {"label": RESET_OWN.label, "reset_rows": [2, 3]}
        assert variant.info["status"] == "completed" and variant.steps[-1] == parent.steps[-1]
        end = variant.steps[-1]
        assert not torch.equal(variant.weights_at(end)["W_E"], parent.weights_at(end)["W_E"])


def test_a_variant_with_its_own_phases_branches_at_the_switch_with_a_new_adam(parents, tmp_path):
    lower = Variant("p=4 at a tenth of the rate", (Phase(p=4, steps=6, lr=1e-3),))
    (made,) = make_variants(parents[:1], lower, [tmp_path / "low"], progress=False)
    phases = made.config.train.phases
    assert [(ph.p, ph.steps, ph.lr) for ph in phases] == [(2, 20, 1e-2), (4, 6, 1e-3)]
    switch = 20
    assert torch.equal(made.weights_at(switch)["W_E"], parents[0].weights_at(switch)["W_E"])  # no reset
    assert made.info["variant"]["reset_rows"] == []


def test_a_parent_with_one_phase_needs_the_variant_to_name_its_phases(tmp_path):
    lone = train(tiny_config("2:10:1e-2"), tmp_path / "lone", progress=False)
    with pytest.raises(ConfigError, match="has no phase after its first"):
        make_variants([lone], RESET_OWN, [tmp_path / "v"], progress=False)
    assert not (tmp_path / "v").exists()
