"""The training engine: the hooked model's exact function for S independent runs at once, cheaper.

Two facts make it cheaper than running `CrossAttentionTransformer` S times:
- z_t = RMS(W_E[x_t] + p_t) depends only on (token, position), so it is computed once per table
  entry (n_tokens x T rows) instead of once per sequence and position;
- attention is linear in the values, so sum_t a_t (z_t W_V) = (sum_t a_t z_t) W_V, and with the
  table that becomes (A ⊙ onehot(x)) @ (Z W_V): a [batch, V*T] x [V*T, d] product.

The S runs' weights live side by side in one flat buffer `theta` [S, P], so Adam is a handful of
whole-buffer operations. Tests hold this engine to the hooked model (logits and gradients).

The standard transformer (`ModelConfig.arch == "transformer"`) has its own engine, `stacked`:
`loss_and_grad` and `evaluate` hand its runs there; the layout, the executor and Adam are shared.

Same config, same bytes: on the CPU a run's arithmetic is one fixed sequence of single-threaded
kernel calls on tensors of fixed shapes and alignment, whatever else trains beside it (see `Executor`).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuitpath.config import ModelConfig, TrainConfig
from circuitpath.models.weights import root_mean_square, weight_shapes
from circuitpath.training import fused


#: A parameter row is padded to a multiple of this many floats (128 bytes). Every row then starts at
#: the same alignment, and an elementwise kernel's vector body and scalar tail (whose rounding may
#: differ) never split a row at a place that depends on how many rows the buffer holds.
ROW_ALIGN = 32


@dataclass(frozen=True)
class Layout:
    """Where each weight lives in a flat parameter row of length `size` (zero-padded to `ROW_ALIGN`)."""

    cfg: ModelConfig
    shapes: dict[str, tuple[int, ...]]
    offsets: dict[str, tuple[int, int]]
    size: int

    @classmethod
    def of(cls, cfg: ModelConfig) -> Layout:
        shapes, offsets, start = weight_shapes(cfg), {}, 0
        for name, shape in shapes.items():
            offsets[name] = (start, start + math.prod(shape))
            start += math.prod(shape)
        return cls(cfg, shapes, offsets, -(-start // ROW_ALIGN) * ROW_ALIGN)

    def pad(self, rows: Float[Tensor, "runs used"]) -> Float[Tensor, "runs P"]:
        """Rows of the weights' values (or of their gradients, or of an optimiser state) with the padding added."""
        return F.pad(rows, (0, self.size - rows.shape[-1]))

    def join(self, grads: list[Tensor]) -> Float[Tensor, "runs P"]:
        """Per-weight tensors [runs, *shape], in layout order, as flat padded rows (e.g. gradients)."""
        return self.pad(torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1))

    def views(self, theta: Float[Tensor, "runs P"]) -> dict[str, Tensor]:
        """Weight views [runs, *shape] into theta (gradients flow back into theta)."""
        runs = theta.shape[0]
        return {
            name: theta[:, start:end].view(runs, *self.shapes[name])
            for name, (start, end) in self.offsets.items()
        }

    def pack(self, weights: list[dict[str, Tensor]]) -> Float[Tensor, "runs P"]:
        """Stack the weight dicts of several runs into one flat buffer."""
        return self.pad(torch.stack(
            [torch.cat([w[name].reshape(-1).float() for name in self.shapes]) for w in weights]
        ))

    def unpack(self, row: Float[Tensor, " P"]) -> dict[str, Tensor]:
        """The weight dict of one run (contiguous CPU copies, ready for safetensors)."""
        return {
            name: row[start:end].detach().reshape(self.shapes[name]).cpu().clone()
            for name, (start, end) in self.offsets.items()
        }


@dataclass(frozen=True)
class Encoded:
    """Sequences of S runs prepared for the engine: one-hot over (token, position) and score indices."""

    onehot: Float[Tensor, "runs batch table"] | None  # table = n_tokens * n_ctx; None where only the index is read
    index: Int[Tensor, "runs batch_pos"]
    targets: Int[Tensor, "runs batch"]

    def rows(self, runs: slice) -> Encoded:
        return Encoded(_part(self.onehot, runs), self.index[runs], self.targets[runs])

    def batch(self, sequences: slice) -> Encoded:
        """These sequences of every run (views)."""
        n_ctx = self.index.shape[1] // self.targets.shape[1]
        return Encoded(_part(self.onehot, (slice(None), sequences)),
                       self.index[:, sequences.start * n_ctx:sequences.stop * n_ctx], self.targets[:, sequences])

    def copy(self) -> Encoded:
        """The same sequences in buffers of their own (freshly allocated, so aligned as any new tensor)."""
        return Encoded(_part(self.onehot, slice(None)).clone(), self.index.clone(), self.targets.clone())

    @classmethod
    def of(cls, x: Int[Tensor, "runs batch pos"], y: Int[Tensor, "runs batch"], n_tokens: int,
           onehot: bool = True) -> Encoded:
        """Sequences and targets of each run; `onehot=False` leaves the one-hot table out (the fused
        path reads only the index)."""
        runs, batch, n_ctx = x.shape
        index = x * n_ctx + torch.arange(n_ctx, device=x.device)
        table = None
        if onehot:
            table = torch.zeros(runs, batch, n_tokens * n_ctx, device=x.device)
            table.scatter_(2, index, 1.0)
        return cls(table, index.reshape(runs, batch * n_ctx), y)


def _part(tensor: Tensor | None, where) -> Tensor | None:
    return None if tensor is None else tensor[where]


def rms(x: Tensor, eps: float) -> Tensor:
    return x / (root_mean_square(x) + eps)


def forward(w: dict[str, Tensor], data: Encoded, cfg: ModelConfig) -> Float[Tensor, "runs batch n_tokens"]:
    """Logits of every run on its own sequences, with a true softmax (differentiable by autograd).

    The reference path of the engine: used where `fast_forward` is not safe, and by the tests.
    """
    runs, batch, table = data.onehot.shape
    n_ctx, d = cfg.n_ctx, cfg.d_model
    z = rms(w["W_E"][:, :, None, :] + w["W_pos"][:, None, :, :], cfg.eps)  # [runs, V, T, d]
    z = z.reshape(runs, table, d)
    score_table = (z * w["W_Q"][:, None, :]).sum(-1) / math.sqrt(d)  # [runs, table]
    scores = score_table.gather(1, data.index).view(runs, batch, n_ctx)
    pattern = scores.softmax(dim=-1)  # [runs, batch, key_pos]
    mixing = data.onehot * pattern.repeat(1, 1, cfg.n_tokens)  # [runs, batch, table]
    z_attn = mixing @ (z @ w["W_V"])  # [runs, batch, d]
    z_bar = rms(z_attn, cfg.eps)
    post = F.gelu(torch.baddbmm(w["b_in"][:, None, :], z_bar, w["W_in"]))  # [runs, batch, h]
    resid = z_attn if cfg.residual == "attn_out" else z_bar  # r of equation 4
    z_out = resid + torch.baddbmm(w["b_out"][:, None, :], post, w["W_out"])
    w_u = w["W_E"].transpose(1, 2) if cfg.tied else w["W_U"]
    return z_out @ w_u


def run_losses(logits: Tensor, targets: Int[Tensor, "runs batch"]) -> Float[Tensor, " runs"]:
    """Mean cross-entropy of each run."""
    runs, batch, n_tokens = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, n_tokens), targets.reshape(-1), reduction="none")
    return losses.view(runs, batch).mean(1)


# ---- the fast path: softmax through an exponential table, and a hand-derived backward -----------
#
# Every score is z_t . W_Q / sqrt(d) with |z_t| <= sqrt(d), so it lies in [-|W_Q|, |W_Q|]. With
# E = exp(score_table - max), the softmax of a sequence is E[x_t, t] / sum_t E[x_t, t], and
#   z_A = (onehot @ (E * Z W_V)) / (onehot @ E)      one [batch, V*T] x [V*T, d + 1] product.
# No weight of a sequence underflows while 2 |W_Q| < SAFE_SPREAD; beyond, the softmax path is used.
SAFE_SPREAD = 80.0


def fast_path_safe(w: dict[str, Tensor]) -> bool:
    return bool(2 * w["W_Q"].norm(dim=-1).max() < SAFE_SPREAD)


def rms_backward(grad: Tensor, x: Tensor, norm: Tensor, root: Tensor) -> Tensor:
    """Gradient of x / norm, norm = root + eps, root = sqrt(mean(x**2)), given the output's gradient."""
    d = x.shape[-1]
    dot = (grad * x).sum(-1, keepdim=True)
    return grad / norm - x * (dot / (norm * norm * root.clamp_min(1e-30) * d))


def _flipped(a: Tensor, b: Tensor) -> Tensor:
    """a @ b computed as (bᵀ aᵀ)ᵀ, a transposed view. Where the result has V = 4 columns or the
    product sums over the batch, this orientation runs 1.2-6x faster on the CPU at the paper's
    size (e.g. [2048, 128] x [128, 4]: 283 -> 62 µs on one core); large results are made
    contiguous before elementwise work."""
    return (b.transpose(1, 2) @ a.transpose(1, 2)).transpose(1, 2)


@torch.inference_mode()  # no autograd bookkeeping on any of its ~150 calls (2% of the step, measured)
def fast_loss_and_grad(w: dict[str, Tensor], data: Encoded, cfg: ModelConfig) -> tuple[Tensor, list[Tensor]]:
    """Each run's loss and the gradients of every weight (in layout order), without autograd."""
    runs, batch, table = data.onehot.shape
    d, v, n_ctx = cfg.d_model, cfg.n_tokens, cfg.n_ctx
    # forward: the (token, position) table
    resid = (w["W_E"][:, :, None, :] + w["W_pos"][:, None, :, :]).reshape(runs, table, d)
    root1 = root_mean_square(resid)
    norm1 = root1 + cfg.eps
    z = resid / norm1  # [runs, table, d]
    scores = (z * w["W_Q"][:, None, :]).sum(-1, keepdim=True) / math.sqrt(d)  # [runs, table, 1]
    expo = torch.exp(scores - scores.amax(1, keepdim=True))
    zv = z @ w["W_V"]  # [runs, table, d]
    weighted = torch.cat([expo * zv, expo], dim=2)  # [runs, table, d + 1]
    # forward: per sequence
    mixed = data.onehot @ weighted  # [runs, batch, d + 1]
    den = mixed[:, :, d:]
    z_attn = mixed[:, :, :d] / den
    root2 = root_mean_square(z_attn)
    norm2 = root2 + cfg.eps
    z_bar = z_attn / norm2
    pre = torch.baddbmm(w["b_in"][:, None, :], z_bar, w["W_in"])
    post = F.gelu(pre)
    w_u = w["W_E"].transpose(1, 2) if cfg.tied else w["W_U"]
    r = z_attn if cfg.residual == "attn_out" else z_bar  # r of equation 4
    # logits = (r + post W_out + b_out) W_U with W_out W_U [h, V] formed first: z_O is never
    # materialised and no product but pre's and two in the backward has all of d and h in it
    out_u = w["W_out"] @ w_u  # [runs, h, V]
    logits = (_flipped(post, out_u) + _flipped(r, w_u)).contiguous().add_(w["b_out"][:, None, :] @ w_u)
    # cross-entropy written out: log_softmax over 4 logits a row is 4x slower than these few passes
    shifted = logits - logits.amax(-1, keepdim=True)
    expo_logits = shifted.exp()
    total = expo_logits.sum(-1, keepdim=True)
    losses = (total.log() - shifted.gather(2, data.targets[:, :, None])).squeeze(2).mean(1)
    # backward: per sequence
    g_logits = expo_logits.div_(total)  # the softmax
    g_logits.scatter_add_(2, data.targets[:, :, None], torch.full_like(g_logits[:, :, :1], -1.0))
    g_logits.div_(batch)
    g_post_u = _flipped(post.transpose(1, 2), g_logits)  # [runs, h, V]
    g_total = g_logits.sum(1, keepdim=True)  # [runs, 1, V]
    g_w_u = w["W_out"].transpose(1, 2) @ g_post_u + _flipped(r.transpose(1, 2), g_logits)
    g_w_u += w["b_out"][:, :, None] * g_total  # z_O^T g_logits, term by term: [runs, d, V]
    g_z_out = g_logits @ w_u.transpose(1, 2)  # also the gradient of r
    g_b_out = (g_total @ w_u.transpose(1, 2)).squeeze(1)
    g_w_out = g_post_u @ w_u.transpose(1, 2)
    g_pre = torch.ops.aten.gelu_backward(g_logits @ out_u.transpose(1, 2), pre)
    g_b_in = g_pre.sum(1)
    g_w_in = z_bar.transpose(1, 2) @ g_pre
    if cfg.residual == "attn_out":
        g_z_attn = rms_backward(g_pre @ w["W_in"].transpose(1, 2), z_attn, norm2, root2) + g_z_out
    else:
        g_z_attn = rms_backward(torch.baddbmm(g_z_out, g_pre, w["W_in"].transpose(1, 2)), z_attn, norm2, root2)
    g_den = -(g_z_attn * z_attn).sum(-1, keepdim=True) / den
    g_mixed = torch.cat([g_z_attn / den, g_den], dim=2)
    # backward: the table
    g_weighted = _flipped(data.onehot.transpose(1, 2), g_mixed)  # [runs, table, d + 1]
    g_expo = (g_weighted[:, :, :d] * zv).sum(-1, keepdim=True) + g_weighted[:, :, d:]
    g_zv = expo * g_weighted[:, :, :d]
    g_scores = (g_expo * expo) / math.sqrt(d)  # the shift by the max has zero total gradient
    g_w_v = z.transpose(1, 2) @ g_zv
    g_w_q = (z.transpose(1, 2) @ g_scores).squeeze(2)
    g_z = torch.baddbmm(g_scores * w["W_Q"][:, None, :], g_zv, w["W_V"].transpose(1, 2))
    g_resid = rms_backward(g_z, resid, norm1, root1).view(runs, v, n_ctx, d)
    g_w_e = g_resid.sum(2)
    if cfg.tied:
        g_w_e = g_w_e + g_w_u.transpose(1, 2)
    grads = {"W_E": g_w_e, "W_pos": g_resid.sum(1), "W_Q": g_w_q, "W_V": g_w_v, "W_in": g_w_in,
             "b_in": g_b_in, "W_out": g_w_out, "b_out": g_b_out, "W_U": g_w_u}
    return losses, [grads[name] for name in weight_shapes(cfg)]


def loss_and_grad(
    theta: Float[Tensor, "runs P"], layout: Layout, data: Encoded
) -> tuple[Float[Tensor, " runs"], Float[Tensor, "runs P"]]:
    """Each run's loss and its gradient; the fast path when it is safe, autograd otherwise."""
    if layout.cfg.arch == "transformer":
        from circuitpath.training import stacked  # the hooked transformer, TransformerLens with it: only when trained

        return stacked.loss_and_grad(theta, layout, data)
    weights = layout.views(theta)
    if fast_path_safe(weights):
        losses, grads = fast_loss_and_grad(weights, data, layout.cfg)
        return losses, layout.join(grads)
    return autograd_loss_and_grad(theta, layout, data)


def autograd_loss_and_grad(theta: Tensor, layout: Layout, data: Encoded) -> tuple[Tensor, Tensor]:
    """The same, by autograd through the softmax path (runs are independent: the sum's gradient splits)."""
    theta = theta.detach().requires_grad_(True)
    losses = run_losses(forward(layout.views(theta), data, layout.cfg), data.targets)
    (grad,) = torch.autograd.grad(losses.sum(), theta)
    return losses.detach(), grad


@torch.inference_mode()
def evaluate(
    theta: Float[Tensor, "runs P"], layout: Layout, data: Encoded
) -> tuple[Float[Tensor, " runs"], Float[Tensor, " runs"]]:
    """Loss and accuracy of each run on its own sequences."""
    if layout.cfg.arch == "transformer":
        from circuitpath.training import stacked

        return stacked.evaluate(theta, layout, data)
    logits = forward(layout.views(theta), data, layout.cfg)
    accuracy = (logits.argmax(-1) == data.targets).float().mean(1)
    return run_losses(logits, data.targets), accuracy


class Executor:
    """Runs the engine over S runs chunk by chunk, spread over a worker pool when given one.

    On the CPU every run is a chunk of its own and every kernel runs on one thread (the caller sets
    it: `train` does), so a run's arithmetic is the same sequence of kernel calls, on tensors of the
    same shapes and alignment, alone or in any group, on any backend: batched products take another
    code path for a batch of one (pytorch's bmm), a product split over threads sums in another order
    (pytorch/pytorch#88718), and both would make a run's bytes depend on its batch-mates or on the
    thread count. Parallelism is across runs: one worker per core. Each chunk's sequences are copied
    into their own buffers (`split`), so their alignment does not depend on their row in the group.
    It costs some speed on one core (`benchmarks/bench_train.py`: 2.75 against 2.26 ms a run-step
    for chunks of 4), which processes across cores win back (`processes.py`).
    On a GPU all runs go in one chunk (nothing is promised about its bytes). Small models on the CPU
    (`fused.takes_fused_path`, a function of the config) take the fused path instead: one compiled
    loop per run, a chunk of runs per core. The standard transformer's runs go a chunk a core too:
    `stacked` vmaps them, and a vmapped run's bytes do not depend on its batch-mates.
    """

    def __init__(self, runs: int, device: torch.device, pool: ThreadPoolExecutor | None = None,
                 cfg: ModelConfig | None = None, train: TrainConfig | None = None):
        self.fused = cfg is not None and fused.takes_fused_path(cfg, device, train)
        transformer = cfg is not None and cfg.arch == "transformer" and device.type == "cpu"
        if self.fused or transformer:  # compiled loops run after run, or vmapped calls (`stacked`): any
            size = -(-runs // (os.cpu_count() or 1))  # chunking gives the same bytes; a chunk a core
        else:
            size = 1 if device.type == "cpu" else max(runs, 1)
        self.chunks = [slice(i, min(i + size, runs)) for i in range(0, runs, size)]
        self.pool = pool if len(self.chunks) > 1 else None

    def split(self, data: Encoded) -> list[Encoded]:
        """Each chunk's rows of `data`, in buffers of their own (one chunk on a GPU: `data` itself)."""
        if len(self.chunks) == 1:
            return [data]
        if self.fused:  # plain loops: alignment changes no result
            return [data.rows(rows) for rows in self.chunks]
        return [data.rows(rows).copy() for rows in self.chunks]

    def _map(self, fn, parts: list[Encoded]):
        """fn(rows, data) of every chunk, in order; with a pool, its workers each take every n-th chunk
        (one task a worker and step: fewer hand-overs than a task a chunk)."""
        jobs = list(zip(self.chunks, parts))
        if self.pool is None:
            return [fn(*job) for job in jobs]
        workers = min(self.pool._max_workers, len(jobs))
        shares = self.pool.map(lambda share: [fn(*job) for job in jobs[share::workers]], range(workers))
        out: list = [None] * len(jobs)
        for share, results in enumerate(shares):
            out[share::workers] = results
        return out

    def loss_and_grad(self, theta: Tensor, layout: Layout, parts: list[Encoded]) -> tuple[Tensor, Tensor]:
        """Each run's loss [runs] and gradient [runs, P]."""
        return self._each(fused.loss_and_grad if self.fused else loss_and_grad, theta, layout, parts)

    def evaluate(self, theta: Tensor, layout: Layout, parts: list[Encoded]) -> tuple[Tensor, Tensor]:
        """Each run's loss and accuracy [runs] on its sequences."""
        return self._each(fused.evaluate if self.fused else evaluate, theta, layout, parts)

    def _each(self, fn, theta: Tensor, layout: Layout, parts: list[Encoded]) -> tuple[Tensor, Tensor]:
        """fn on every chunk (the fused kernels read the index and targets, the engine the encoding), joined."""
        if self.fused:
            step = lambda rows, data: fn(theta[rows], layout, data.index, data.targets)  # noqa: E731
        else:
            step = lambda rows, data: fn(theta[rows], layout, data)  # noqa: E731
        out = self._map(step, parts)
        return torch.cat([p[0] for p in out]), torch.cat([p[1] for p in out])


class Adam:
    """torch.optim.Adam's update on a flat [runs, P] buffer with one lr per run; with the recipe of a
    phase (`config.Phase`), torch.optim.AdamW's, with warm-up and gradient clipping.

    Each step, in torch's order: clip each run's gradient to norm `clip` (torch.nn.utils.clip_grad_norm_
    on the run's own gradient), take the rate lr_t = lr * min(1, t / warmup) (t = 1, 2, ... the steps of
    the phase), shrink the decayed weights by 1 - lr_t * weight_decay (`decay_mask`, built once by
    `decay_mask`), then Adam's update at lr_t. The default recipe takes none of the first three
    operations: plain Adam's bytes are those of before the recipe existed.
    """

    def __init__(self, theta: Tensor, lr: Float[Tensor, " runs"], betas=(0.9, 0.999), eps: float = 1e-8, *,
                 weight_decay: float = 0.0, decay: Float[Tensor, " P"] | None = None, warmup: int = 0,
                 clip: float | None = None):
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.step_count = 0
        self.lr = lr.to(theta)[:, None]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.base_lr = lr.double()[:, None]  # the decay factor is formed in double, as torch's scalar is
        self.weight_decay, self.warmup, self.clip = weight_decay, warmup, clip
        self.decay = None if decay is None else decay.double().to(theta.device)

    @classmethod
    def of_phase(cls, theta: Tensor, lr: Float[Tensor, " runs"], phase, layout: Layout) -> Adam:
        """The optimiser of one phase (`config.Phase`): its betas, weight decay, warm-up and clipping."""
        decay = decay_mask(layout, phase.decay) if phase.weight_decay else None
        return cls(theta, lr, phase.betas, weight_decay=phase.weight_decay, decay=decay, warmup=phase.warmup,
                   clip=phase.clip)

    @torch.no_grad()
    def step(self, theta: Tensor, grad: Tensor) -> None:
        self.step_count += 1
        if self.clip is not None:
            grad = clip_rows(grad, self.clip)
        lr = self.lr
        if self.warmup and self.step_count < self.warmup:
            lr = self.lr * (self.step_count / self.warmup)
        if self.weight_decay:
            rate = self.base_lr * min(1.0, self.step_count / self.warmup) if self.warmup else self.base_lr
            theta.mul_((1 - rate * self.weight_decay * self.decay).to(theta.dtype))
        self.m.lerp_(grad, 1 - self.beta1)
        self.v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        bias1 = 1 - self.beta1**self.step_count
        bias2_sqrt = (1 - self.beta2**self.step_count) ** 0.5
        denom = (self.v.sqrt() / bias2_sqrt).add_(self.eps)
        theta.addcmul_(self.m / denom, lr, value=-1.0 / bias1)

    def state(self) -> dict[str, Tensor]:
        return {"m": self.m, "v": self.v}

    def load(self, m: Tensor, v: Tensor, step_count: int) -> None:
        self.m.copy_(m)
        self.v.copy_(v)
        self.step_count = step_count


def decay_mask(layout: Layout, decay: str = "matrices") -> Float[Tensor, " P"]:
    """1 on the weights AdamW decays, 0 elsewhere (padding included), over a flat row.

    "matrices": the weights named W_* of two or more axes per run (attention, MLP, unembedding),
    not embeddings (W_E), positions (W_pos), norms or biases; "all": every weight."""
    mask = torch.zeros(layout.size)
    for name, (start, end) in layout.offsets.items():
        leaf = name.rsplit(".", 1)[-1]
        matrix = leaf.startswith("W_") and leaf not in ("W_E", "W_pos") and len(layout.shapes[name]) >= 2
        if decay == "all" or matrix:
            mask[start:end] = 1.0
    return mask


def clip_rows(grad: Float[Tensor, "runs P"], max_norm: float) -> Float[Tensor, "runs P"]:
    """Each run's gradient scaled to norm at most `max_norm`, as torch.nn.utils.clip_grad_norm_ does."""
    norms = torch.linalg.vector_norm(grad, dim=1, keepdim=True)
    return grad * (max_norm / (norms + 1e-6)).clamp(max=1.0)
