"""analyses/finetune_study.py: the reset of the unseen token rows at the switch, on a tiny run."""

import sys
from pathlib import Path

import torch

from circuitpath import train
from circuitpath.branch import _create, plan_branch
from circuitpath.config import Phase
from circuitpath.runs import load_run
from conftest import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))
import finetune_study  # noqa: E402


def test_reset_puts_back_the_initial_rows_of_tokens_2_and_3_only(tmp_path):
    parent = train(tiny_config("2:20:1e-2"), tmp_path / "p2", progress=False)
    end = parent.steps[-1]
    plan = plan_branch(parent, end, (Phase(p=4, steps=10, lr=1e-2),), tmp_path / "b", new_phase=True)
    _create(plan, False)
    finetune_study.reset_unseen(tmp_path / "b", end)
    before, initial = parent.weights_at(end), parent.weights_at(0)
    after = load_run(tmp_path / "b").weights_at(end)  # loads only with a valid checksum
    assert not torch.equal(before["W_E"][2:], initial["W_E"][2:])
    assert torch.equal(after["W_E"][2:], initial["W_E"][2:]) and torch.equal(after["W_E"][:2], before["W_E"][:2])
    assert all(torch.equal(after[k], before[k]) for k in before if k != "W_E")
