"""The fine-tune's start, measured on a hand-set model whose logits are known by construction."""

import math

import pytest
import torch
import torch.nn.functional as F

from circuitpath import ModelConfig
from circuitpath.analysis.finetune_start import finetune_start, run_finetune_start, seen_tokens
from circuitpath.data import Split, targets
from circuitpath.errors import RunError

W_E = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.0], [0.0, -4.0]])
B_OUT = torch.tensor([2.0, 1.0])
LOGITS = [2.0, 1.0, -6.0, -4.0]  # B_OUT . W_E[j]: the same for every input


def constant_logits_model() -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """W_V = 0 makes z_A = 0, so RMS(z_A) = 0, the MLP outputs b_out, and logits = b_out @ W_E.T."""
    cfg = ModelConfig(d_model=2, d_mlp=3, n_tokens=4, n_ctx=3)
    weights = {"W_E": W_E, "W_pos": torch.zeros(3, 2), "W_Q": torch.zeros(2), "W_V": torch.zeros(2, 2),
               "W_in": torch.ones(2, 3), "b_in": torch.zeros(3), "W_out": torch.ones(3, 2), "b_out": B_OUT}
    return weights, cfg


def test_loss_scale_and_rows_of_a_hand_set_model():
    weights, cfg = constant_logits_model()
    x = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 2, 0], [2, 3, 3]])
    y = targets(x, p=4, k=2)
    assert y.tolist() == [0, 1, 2, 3, 1]
    start = finetune_start(weights, cfg, Split(x, y, x, y), p=4, seen={0, 1})
    lse = math.log(sum(math.exp(v) for v in LOGITS))
    per_target = [lse - v for v in LOGITS]
    assert start.loss == pytest.approx(sum(per_target[t] for t in y.tolist()) / 5, rel=1e-6)
    assert start.accuracy == pytest.approx(1 / 5)  # token 0 is always predicted
    assert start.mean_max_abs_logit == pytest.approx(6.0)
    assert start.unseen == [2, 3] and start.chance_loss == pytest.approx(math.log(4))
    assert [r.norm for r in start.rows] == pytest.approx([1.0, 1.0, 3.0, 4.0])
    assert [r.mean_logit for r in start.rows] == pytest.approx(LOGITS)
    assert [r.targets for r in start.rows] == [1, 2, 1, 1]
    assert [r.target_loss for r in start.rows] == pytest.approx(per_target, rel=1e-6)


def test_an_absent_target_has_no_loss_and_rows_above_p_are_not_unseen_tokens():
    weights, cfg = constant_logits_model()
    x = torch.tensor([[0, 0, 1], [0, 1, 1]])
    y = targets(x, p=3, k=2)
    start = finetune_start(weights, cfg, Split(x, y, x, y), p=3, seen={0})
    assert start.unseen == [1, 2]  # token 3 is not in the p = 3 alphabet
    assert math.isnan(start.rows[2].target_loss) and start.rows[2].targets == 0


def test_seen_tokens_are_those_in_the_inputs():
    assert seen_tokens([torch.tensor([[0, 1, 1]]), torch.tensor([[3, 0, 0]])]) == {0, 1, 3}


def test_a_run_is_measured_at_its_switch_on_the_fine_tunes_data(trained_run):
    run = trained_run  # p = 2 for 20 steps, then p = 4 for 20
    start = run_finetune_start(run)
    assert start.p == 4 and start.unseen == [2, 3]
    split = run.data(1)
    loss = {step: F.cross_entropy(run.model_at(step)(split.x_train), split.y_train).item() for step in (20, 40)}
    assert start.loss == pytest.approx(loss[20], rel=1e-6) and loss[20] != pytest.approx(loss[40], rel=1e-3)
    with pytest.raises(RunError, match="got 0"):
        run_finetune_start(run, phase=0)
