"""The standard transformer: a training step of 32 seeds, and the hooked forward against a plain one.

Run: python benchmarks/bench_transformer.py [--seeds 32] [--batch 64] [--d-model 32] [--rounds 5] [--recipe-seeds 8] [--recipe-d-model 128] [--only recipe]
Model: d = 32, 2 layers, 4 heads, T = 12, n_tokens = 4, CLS readout (flags change d and the batch).
The plain model (`plain_logits` below) is the hooked model's arithmetic, op for op, as one function:
no hook points, no module tree.
- Training, ms per step of all the seeds, interleaved rounds in this process:
  plain loop: per seed, the plain model with autograd and torch.optim.Adam, seed after seed, one
  thread a kernel (--threads N: N);
  circuitpath: `Executor` and `Adam` as `train` runs them on the CPU: a chunk of runs a core, one
  thread a kernel, each chunk vmapped in calls of at most `stacked.WORK_PER_CALL` sequence positions;
  a run a call: the same, one run to each vmapped call (what sharing calls buys);
  one call: every seed in one vmapped call on one core (the GPU's arrangement), --threads threads.
All three engine arrangements give each run the same bytes (tests/test_transformer.py).
- The training recipe (`config.Phase`: AdamW) at the setting where it learns p = 2: d = 64, MLP 256, 2 layers,
  4 heads, layer norm, untied readout, GPT-2 initialisation, mini-batches of 128, AdamW lr 1e-3, betas
  (0.9, 0.98), weight decay 0.1 on the matrices. The engine (`Executor`, `Adam.of_phase`, as `train`) against
  a plain loop per seed (the plain model, autograd, torch.optim.AdamW), and each one's GFLOP/s of the step's
  matrix products (counted by torch's FlopCounterMode on the plain loop's step) against a one-thread sgemm's.
- Forward: the hooked model with no hooks attached against the plain model, no gradient, one thread.
One thread a kernel by default: on a small shared machine torch's threads wait on each other and on
other load (on 2 busy cores, 2 threads made the plain loop 5-10x slower than one).
"""

# %%
from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import measure, table

from circuitpath.config import ModelConfig, Phase
from circuitpath.models.transformer import StandardTransformer, _heads_in, _softmax
from circuitpath.models.weights import transformer_init as init_weights
from circuitpath.training import stacked
from circuitpath.training.engine import Adam, Encoded, Executor, Layout


def plain_norm(x, w: dict, name: str, cfg: ModelConfig):
    if cfg.norm == "layer":
        x = x - x.mean(-1, keepdim=True)
    x = x / (x.pow(2).mean(-1, keepdim=True) + cfg.eps).sqrt() * w[f"{name}.w"]
    return x + w[f"{name}.b"] if cfg.norm == "layer" else x


def plain_logits(w: dict, tokens, cfg: ModelConfig):
    """The hooked model's forward, op for op, as one plain function (CLS readout)."""
    tokens = F.pad(tokens, (0, 1), value=cfg.n_tokens)
    resid = F.embedding(tokens, w["embed.W_E"]) + w["pos_embed.W_pos"].expand(tokens.shape[0], -1, -1)
    for layer in range(cfg.n_layers):
        at = f"blocks.{layer}."
        x = plain_norm(resid, w, at + "ln1", cfg)
        q, k, v = (_heads_in(x, w[f"{at}attn.W_{m}"], w[f"{at}attn.b_{m}"]) for m in "QKV")
        pattern = _softmax(q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / cfg.d_head**0.5)
        z = (pattern @ v.transpose(1, 2)).transpose(1, 2)
        w_o = w[f"{at}attn.W_O"]
        resid = resid + (z.reshape(*z.shape[:2], -1) @ w_o.reshape(-1, w_o.shape[-1]) + w[f"{at}attn.b_O"])
        hidden = F.gelu(plain_norm(resid, w, at + "ln2", cfg) @ w[f"{at}mlp.W_in"] + w[f"{at}mlp.b_in"])
        resid = resid + (hidden @ w[f"{at}mlp.W_out"] + w[f"{at}mlp.b_out"])
    w_u = w["unembed.W_U"] if "unembed.W_U" in w else w["embed.W_E"][: cfg.n_tokens].T
    return plain_norm(resid, w, "ln_final", cfg)[:, cfg.n_ctx] @ w_u


def seed_after_seed(weights: list[dict], optimisers: list, cfgs: list[ModelConfig], x, y):
    """One step of every seed in turn: the plain model's loss, autograd and the seed's own optimiser."""
    def step():
        for s, (w, optimiser) in enumerate(zip(weights, optimisers)):
            optimiser.zero_grad()
            F.cross_entropy(plain_logits(w, x[s], cfgs[s]), y[s]).backward()
            optimiser.step()

    return step


def plain_loop(cfgs: list[ModelConfig], x, y):
    """One step of every seed: the plain model, autograd and torch.optim.Adam, seed after seed."""
    weights = [{k: v.clone().requires_grad_(True) for k, v in init_weights(c).items()} for c in cfgs]
    optimisers = [torch.optim.Adam(list(w.values()), lr=1e-3) for w in weights]

    return seed_after_seed(weights, optimisers, cfgs, x, y)


def engine_step(cfgs: list[ModelConfig], x, y, pool: ThreadPoolExecutor | None, work_per_call: int | None = None):
    """One step of every seed through the engine as `train` runs it; with `work_per_call`, vmapped
    calls of at most that many sequence positions (0: a run a call), and without a pool, one chunk."""
    layout = Layout.of(cfgs[0])
    theta = layout.pack([init_weights(c) for c in cfgs])
    executor = Executor(len(cfgs), theta.device, pool, cfgs[0])
    if pool is None:
        executor.chunks, executor.pool = [slice(0, len(cfgs))], None
    parts = executor.split(Encoded.of(x, y, cfgs[0].n_tokens))
    adam = Adam(theta, torch.full((len(cfgs),), 1e-3))

    def step():
        before = stacked.WORK_PER_CALL
        stacked.WORK_PER_CALL = before if work_per_call is None else work_per_call
        try:
            _, grad = executor.loss_and_grad(theta, layout, parts)
        finally:
            stacked.WORK_PER_CALL = before
        adam.step(theta, grad)

    return step


def threads(fn, count: int = 1):
    """fn with `count` threads a kernel (one: as `train` runs the CPU engine)."""
    def call():
        threads = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)
    return call


def training(args, cfg: ModelConfig) -> str:
    cfgs = [replace(cfg, seed=s) for s in range(args.seeds)]
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.n_tokens, (args.seeds, args.batch, cfg.n_ctx), generator=generator)
    y = x[:, :, :5].sum(-1) % cfg.n_tokens
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        seconds = measure({
            "plain loop": threads(plain_loop(cfgs, x, y), args.threads),
            "circuitpath": threads(engine_step(cfgs, x, y, pool)),
            "a run a call": threads(engine_step(cfgs, x, y, pool, work_per_call=0)),
            "one call": threads(engine_step(cfgs, x, y, None, work_per_call=1 << 62), args.threads),
        }, rounds=args.rounds, seconds=0.2)
    rows = [(name, f"{s * 1e3:.1f}", f"{seconds['plain loop'] / s:.2f}x") for name, s in seconds.items()]
    return table(rows, (f"{args.seeds} seeds, batch {args.batch}", "ms a step", "speed-up on the plain loop"))


#: The recipe's phase and model (the thesis study's setting: d = 128 by the pilot's rule, `--recipe-d-model`);
#: `--recipe-seeds` seeds of it.
RECIPE_PHASE = Phase(p=2, steps=1000, lr=1e-3, batch_size=128, weight_decay=0.1, betas=(0.9, 0.98))


def recipe_model(d_model: int) -> ModelConfig:
    return ModelConfig(arch="transformer", d_model=d_model, d_mlp=4 * d_model, n_layers=2, n_heads=4, n_ctx=12,
                       norm="layer", tied=False, init="gpt2")


def plain_adamw_loop(cfgs: list[ModelConfig], x, y, phase: Phase):
    """One step of every seed: the plain model, autograd and torch.optim.AdamW (decay on the matrices)."""
    weights = [{k: v.clone().requires_grad_(True) for k, v in init_weights(c).items()} for c in cfgs]

    def groups(w: dict) -> list[dict]:
        leaf = lambda name: name.rsplit(".", 1)[-1]  # noqa: E731
        decayed = [name for name in w if leaf(name).startswith("W_") and leaf(name) not in ("W_E", "W_pos")]
        return [{"params": [w[n] for n in decayed], "weight_decay": phase.weight_decay},
                {"params": [v for n, v in w.items() if n not in decayed], "weight_decay": 0.0}]

    optimisers = [torch.optim.AdamW(groups(w), lr=phase.lr, betas=phase.betas) for w in weights]

    return seed_after_seed(weights, optimisers, cfgs, x, y)


def recipe_engine_step(cfgs: list[ModelConfig], x, y, pool: ThreadPoolExecutor, phase: Phase):
    """One step of every seed through the engine as `train` runs the recipe."""
    layout = Layout.of(cfgs[0])
    theta = layout.pack([init_weights(c) for c in cfgs])
    executor = Executor(len(cfgs), theta.device, pool, cfgs[0])
    parts = executor.split(Encoded.of(x, y, cfgs[0].n_tokens))
    adam = Adam.of_phase(theta, torch.full((len(cfgs),), phase.lr), phase, layout)

    def step():
        _, grad = executor.loss_and_grad(theta, layout, parts)
        adam.step(theta, grad)

    return step


def recipe(args) -> str:
    model = recipe_model(args.recipe_d_model)
    cfgs = [replace(model, seed=s) for s in range(args.recipe_seeds)]
    batch = RECIPE_PHASE.batch_size
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, RECIPE_PHASE.p, (len(cfgs), batch, model.n_ctx), generator=generator)
    y = x[:, :, :5].sum(-1) % RECIPE_PHASE.p
    with FlopCounterMode(display=False) as counter:  # one run's step: forward and backward
        plain_adamw_loop(cfgs[:1], x[:1], y[:1], RECIPE_PHASE)()
    flops = counter.get_total_flops()
    positions = batch * (model.n_ctx + 1)  # the largest product: the MLP's [positions, d] x [d, h]
    a, b = torch.randn(positions, model.d_model), torch.randn(model.d_model, model.d_mlp)
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        seconds = measure({
            "plain loop (torch.optim.AdamW)": threads(plain_adamw_loop(cfgs, x, y, RECIPE_PHASE)),
            "circuitpath (Adam.of_phase)": threads(recipe_engine_step(cfgs, x, y, pool, RECIPE_PHASE)),
            f"sgemm {list(a.shape)} x {list(b.shape)}": threads(lambda: a @ b),
        }, rounds=args.rounds, seconds=0.2)
    names = list(seconds)
    work = {names[0]: flops * len(cfgs), names[1]: flops * len(cfgs), names[2]: 2 * a.shape[0] * a.shape[1] * b.shape[1]}
    rate = {name: work[name] / seconds[name] / 1e9 for name in names}
    rows = [(name, f"{seconds[name] * 1e3:.2f}", f"{rate[name]:.1f}", f"{rate[name] / rate[names[2]]:.0%}",
             f"{seconds[names[0]] / seconds[name]:.2f}x" if name != names[2] else "") for name in names]
    title = (f"recipe at d = {model.d_model}: {len(cfgs)} seeds, {flops / 1e6:.1f} MFLOP a run-step")
    return table(rows, (title, "ms a step", "GFLOP/s", "of sgemm's", "speed-up on the plain loop"))


def forward(args, cfg: ModelConfig) -> str:
    model = StandardTransformer(cfg).eval()
    weights = model.weights()
    rows = []
    for batch in (64, 2048):
        x = torch.randint(0, cfg.n_tokens, (batch, cfg.n_ctx), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            seconds = measure({"hooked": threads(lambda: model(x)), "plain": threads(lambda: plain_logits(weights, x, cfg))},
                              rounds=args.rounds)
        rows.append((f"batch {batch}", f"{seconds['plain'] * 1e3:.3f}", f"{seconds['hooked'] * 1e3:.3f}",
                     f"{seconds['hooked'] / seconds['plain']:.2f}x"))
    return table(rows, ("input", "plain ms", "hooked ms", "hooked / plain"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads a kernel of the plain loop and of one call")
    parser.add_argument("--recipe-seeds", type=int, default=8, help="seeds of the recipe's comparison")
    parser.add_argument("--recipe-d-model", type=int, default=128,
                        help="width of the recipe's comparison (default 128: the thesis study's setting)")
    parser.add_argument("--only", choices=("training", "recipe", "forward"), help="run one of the three tables")
    args = parser.parse_args(argv)
    cfg = ModelConfig(arch="transformer", d_model=args.d_model, n_layers=2, n_heads=4, n_ctx=12)
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; plain loop and one call on {args.threads} thread(s)")
    tables = {"training": lambda: training(args, cfg), "recipe": lambda: recipe(args), "forward": lambda: forward(args, cfg)}
    print("\n\n".join(make() for name, make in tables.items() if args.only in (None, name)))


# %%
if __name__ == "__main__":
    main()
