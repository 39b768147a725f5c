"""The paper's experiments shrunk to run in seconds: same names, figures and structure as the presets."""

from dataclasses import replace

from circuitpath.config import ModelConfig, Phase, TaskConfig, TrainConfig
from circuitpath.paper import presets

TASK = TaskConfig(n_ctx=6, k=3, n_train=40, n_test=50)
BATCH = 8  # 5 updates an epoch over 40 sequences


REAL = presets.experiments  # kept before a test replaces `presets.experiments` by the tiny one


def tiny_experiments(residual: str = "attn_out") -> dict[str, presets.Experiment]:
    real = REAL(residual=residual)
    schedule = {"log_every": 5, "checkpoint_every": 10, "dense_checkpoints": 3}
    recipes = {
        "minibatch": ((Phase(4, 30, 1e-2, batch_size=BATCH),), 8,
                      {"log_every": 10, "checkpoint_every": 10, "dense_checkpoints": 0,
                       "extra_checkpoints": tuple(range(1, TASK.n_train // BATCH + 1))}),
        "scratch": ((Phase(4, 30, 1e-2),), 8, schedule),
        "curriculum": ((Phase(2, 10, 1e-2), Phase(4, 20, 1e-2)), 8, schedule),
        "small_curriculum": ((Phase(2, 10, 1e-2), Phase(4, 20, 1e-2)), 2, schedule),
        "small_scratch": ((Phase(4, 30, 1e-2),), 2, schedule),
        "vis_p2": ((Phase(2, 10, 1e-2, batch_size=BATCH),), 2, schedule),
        "vis_finetune": ((Phase(2, 10, 1e-2, batch_size=BATCH), Phase(4, 20, 1e-2, batch_size=BATCH)), 2, schedule),
        "vis_scratch": ((Phase(4, 30, 1e-2, batch_size=BATCH),), 2, schedule),
    }
    out = {}
    for name, (phases, d, train) in recipes.items():
        model = ModelConfig(n_ctx=TASK.n_ctx, d_model=d, d_mlp=8 if d == 2 else None, residual=residual,
                            n_tokens=real[name].model.n_tokens, init=real[name].model.init)
        task = replace(TASK, with_replacement=real[name].task.with_replacement)
        out[name] = replace(real[name], task=task, model=model, train=TrainConfig(phases=phases, **train))
    return out
