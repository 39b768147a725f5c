"""The training step of small models as one compiled loop per run: for d = 2 and mini-batches of 32.

At the paper's d = 32 and full batch a step is a handful of large products, and `engine.py` runs
them as torch kernels. At d = 2, h = 32 and 32 sequences an update is a few microseconds of
arithmetic, and a torch step (~150 kernel calls) costs a hundred times that in dispatch. Here the
whole forward and backward of one run is one numba-compiled loop, in the same order on every
machine and whatever else runs: the runs of a group are independent iterations, so a run's bytes
are a function of its config alone, as with the engine. Past the attention, a block of 32
sequences sits in vector lanes (elementwise IEEE operations: the same bits at any vector width),
and every sum runs in the order the source writes it (no fastmath: the compiler never reassociates
one), so a run's bytes are the same across CPU kernel sets too. erf and exp are plain arithmetic
(rational functions below); log and sqrt are libm's. Arithmetic is in float64 within a run, stored
as float32.

Which path a run takes is a function of its config (`takes_fused_path`), never of a measurement.
Tests hold this path to the hooked model (losses and gradients).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from circuitpath.config import ModelConfig, TrainConfig

#: Runs whose model is at most this wide train on the fused path (on the CPU).
FUSED_MAX_D = 4

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def takes_fused_path(cfg: ModelConfig, device: torch.device, train: TrainConfig | None = None) -> bool:
    """Whether runs of this model train on the fused path: the paper's model, small, on the CPU, with
    plain Adam in every phase of `train`. The compiled loop takes Adam's update only; a phase with
    another recipe (weight decay, betas, warm-up, clipping) sends the run to the general engine."""
    plain = train is None or all(phase.plain for phase in train.phases)
    return device.type == "cpu" and cfg.arch == "cross_attention" and cfg.d_model <= FUSED_MAX_D and plain


def offsets(layout) -> np.ndarray:
    """Start of each weight in a parameter row, in the order the kernels read them (-1: W_U is tied)."""
    names = ("W_E", "W_pos", "W_Q", "W_V", "W_in", "b_in", "W_out", "b_out", "W_U")
    return np.array([layout.offsets[n][0] if n in layout.offsets else -1 for n in names], dtype=np.int64)


def loss_and_grad(theta: Tensor, layout, index: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Each run's mean cross-entropy over its sequences and its gradient, [runs] and [runs, P].

    index: [runs, batch * n_ctx] table rows (token * n_ctx + position), as `engine.Encoded` holds them.
    """
    cfg = layout.cfg
    runs = theta.shape[0]
    losses = np.zeros(runs, dtype=np.float32)
    grad = np.zeros((runs, layout.size), dtype=np.float32)
    _kernel()(theta.detach().numpy(), grad, losses, index.numpy(), targets.numpy(), offsets(layout), cfg.n_ctx,
          cfg.d_model, cfg.d_mlp, cfg.n_tokens, cfg.residual == "attn_out", cfg.eps, True)
    return torch.from_numpy(losses), torch.from_numpy(grad)


def evaluate(theta: Tensor, layout, index: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Each run's mean cross-entropy and accuracy over its sequences (no gradient)."""
    cfg = layout.cfg
    runs = theta.shape[0]
    losses = np.zeros(runs, dtype=np.float32)
    correct = np.zeros(runs, dtype=np.float32)
    _kernel()(theta.detach().numpy(), correct[:, None], losses, index.numpy(), targets.numpy(), offsets(layout),
          cfg.n_ctx, cfg.d_model, cfg.d_mlp, cfg.n_tokens, cfg.residual == "attn_out", cfg.eps, False)
    return torch.from_numpy(losses), torch.from_numpy(correct)


def train_stretch(theta: Tensor, m: Tensor, v: Tensor, lrs: np.ndarray, adam_step: int, layout, index: Tensor,
                  targets: Tensor, first: int, stride: int, batch: int, count: int) -> None:
    """`count` Adam updates of every run, in place on its weights and moments, in one compiled loop.

    Update u of a run reads its sequences [first + u * stride, + batch) of `index` / `targets`
    (stride 0: the same full batch each time; stride = batch: this epoch's consecutive mini-batches).
    `adam_step` is the optimiser's step count before the first of them. Adam is torch.optim.Adam's
    (betas 0.9, 0.999, eps 1e-8) in float64, stored as float32: a run's bytes are its own, in any group.
    """
    cfg = layout.cfg
    _stretch_kernel()(theta.numpy(), m.numpy(), v.numpy(), np.asarray(lrs, dtype=np.float64), adam_step,
                      index.numpy(), targets.numpy(), first, stride, batch, count, offsets(layout), cfg.n_ctx,
                      cfg.d_model, cfg.d_mlp, cfg.n_tokens, cfg.residual == "attn_out", cfg.eps)


def _stretch(theta, m, v, lrs, adam_step, index, targets, first, stride, batch, count, off, n_ctx, d, h, nv,
             attn_out, eps):
    """Every run in turn, all its updates: gradient of the batch (`_run`), then Adam. Weights,
    gradients and work arrays are allocated once for the whole stretch."""
    runs, size = theta.shape
    grad = np.zeros(size, dtype=np.float32)
    w = _weights(n_ctx, d, h, nv)
    g = _weights(n_ctx, d, h, nv)
    ws = _workspace(n_ctx, d, h, nv)
    for s in range(runs):
        for u in range(count):
            start = first + u * stride
            _unpack(theta[s], off, w, n_ctx, d, h, nv)
            _zero(g)
            _run(w, g, ws, index[s, start * n_ctx:(start + batch) * n_ctx], targets[s, start:start + batch], n_ctx,
                 d, h, nv, attn_out, eps, True, False)
            _store(g, grad, off, d, h, nv)
            _adam(theta[s], m[s], v[s], grad, lrs[s], adam_step + u + 1)


def _adam(w, m, v, grad, lr, t):
    """One Adam update of a parameter row (m, v, w in float32; arithmetic in float64)."""
    bias1 = 1.0 - 0.9**t
    bias2_sqrt = math.sqrt(1.0 - 0.999**t)
    for i in range(w.shape[0]):
        g = np.float64(grad[i])
        m_i = 0.9 * np.float64(m[i]) + 0.1 * g
        v_i = 0.999 * np.float64(v[i]) + 0.001 * g * g
        m[i] = m_i
        v[i] = v_i
        w[i] = np.float64(w[i]) - lr * (m_i / bias1) / (math.sqrt(v_i) / bias2_sqrt + 1e-8)


def _step(theta, out, losses, index, targets, off, n_ctx, d, h, v, attn_out, eps, backward):
    """Every run in turn. With `backward`, `out` [runs, P] receives gradients; without, `out[:, 0]`
    receives the accuracy. `losses` [runs] receives the mean loss."""
    runs, batch = targets.shape
    w = _weights(n_ctx, d, h, v)
    g = _weights(n_ctx, d, h, v)
    ws = _workspace(n_ctx, d, h, v)
    for s in range(runs):
        _unpack(theta[s], off, w, n_ctx, d, h, v)
        _zero(g)
        loss, hits = _run(w, g, ws, index[s], targets[s], n_ctx, d, h, v, attn_out, eps, backward, True)
        losses[s] = loss / batch
        if backward:
            _store(g, out[s], off, d, h, v)
        else:
            out[s, 0] = hits / batch


def _weights(n_ctx, d, h, v):
    """Zeroed float64 arrays shaped as one run's weights: W_E, W_pos, W_Q, W_V, W_in, b_in, W_out
    transposed, b_out, W_U."""
    return (np.zeros((v, d)), np.zeros((n_ctx, d)), np.zeros(d), np.zeros((d, d)), np.zeros((d, h)), np.zeros(h),
            np.zeros((d, h)), np.zeros(d), np.zeros((d, v)))


def _zero(w):
    for a in w[0], w[1], w[3], w[4], w[6], w[8]:
        a[:, :] = 0.0
    for a in w[2], w[5], w[7]:
        a[:] = 0.0


def _unpack(row, off, w, n_ctx, d, h, v):
    """One run's weights from its parameter row into the float64 arrays `w` (as `_weights` makes them)."""
    w_e, w_pos, w_q, w_v, w_in, b_in, w_out_t, b_out, w_u = w
    for i in range(v):
        for j in range(d):
            w_e[i, j] = row[off[0] + i * d + j]
    for i in range(n_ctx):
        for j in range(d):
            w_pos[i, j] = row[off[1] + i * d + j]
    for i in range(d):
        w_q[i] = row[off[2] + i]
        b_out[i] = row[off[7] + i]
        for j in range(d):
            w_v[i, j] = row[off[3] + i * d + j]
        for j in range(h):
            w_in[i, j] = row[off[4] + i * h + j]
            w_out_t[i, j] = row[off[6] + j * d + i]
        for c in range(v):
            w_u[i, c] = w_e[c, i] if off[8] < 0 else row[off[8] + i * v + c]
    for j in range(h):
        b_in[j] = row[off[5] + j]


def _store(g, row, off, d, h, v):
    """Write the gradients into a parameter row (float32), W_U's into W_E's rows when tied."""
    g_w_e, g_w_pos, g_w_q, g_w_v, g_w_in, g_b_in, g_w_out_t, g_b_out, g_w_u = g
    tied = off[8] < 0
    for c in range(v):
        for i in range(d):
            row[off[0] + c * d + i] = g_w_e[c, i] + g_w_u[i, c] if tied else g_w_e[c, i]
            if not tied:
                row[off[8] + i * v + c] = g_w_u[i, c]
    for p in range(g_w_pos.shape[0]):
        for i in range(d):
            row[off[1] + p * d + i] = g_w_pos[p, i]
    for i in range(d):
        row[off[2] + i] = g_w_q[i]
        row[off[7] + i] = g_b_out[i]
        for j in range(d):
            row[off[3] + i * d + j] = g_w_v[i, j]
        for j in range(h):
            row[off[4] + i * h + j] = g_w_in[i, j]
            row[off[6] + j * d + i] = g_w_out_t[i, j]
    for j in range(h):
        row[off[5] + j] = g_b_in[j]


#: Sequences computed together: past the attention, every loop runs over the block's sequences
#: (independent elements: vector lanes), sums over a weight's sequences run serially in order.
_BLOCK = 32
#: The attention's weights come from one table of exp(score - the table's largest score) when the
#: table's scores span at most this much (always, in practice), else from each sequence's own largest.
_SHARED_SPAN = 600.0


def _workspace(n_ctx, d, h, v):
    """Work arrays of `_run`: the (token, position) table's, then a block's (sequences last)."""
    table, nb = v * n_ctx, _BLOCK
    return (np.empty((table, d)), np.empty(table), np.empty((table, d)), np.empty(table), np.empty((table, d)),
            np.empty(table), np.empty(table), np.empty((table, d)), np.empty(d), np.empty(d),
            np.empty((nb, n_ctx)), np.empty(n_ctx), np.empty((d, nb)), np.empty(nb), np.empty((d, nb)),
            np.empty((h, nb)), np.empty((h, nb)), np.empty((h, nb)), np.empty((d, nb)), np.empty((v, nb)),
            np.empty((v, nb)), np.empty(nb), np.empty(nb), np.empty((d, nb)), np.empty((h, nb)), np.empty((d, nb)), np.empty(nb))


def _run(w, g, ws, index, targets, n_ctx, d, h, v, attn_out, eps, backward, measure):
    """`_run_d`, compiled apart for d = 2 (the width as a constant: its small loops unroll and the
    loops over sequences run in vector lanes) and for any other width."""
    if d == 2:
        return _run_d(w, g, ws, index, targets, n_ctx, 2, h, v, attn_out, eps, backward, measure)
    return _run_d(w, g, ws, index, targets, n_ctx, d, h, v, attn_out, eps, backward, measure)


def _run_d(w, g, ws, index, targets, n_ctx, d, h, v, attn_out, eps, backward, measure):
    """Sum of losses and count of correct answers of one run over its sequences (with `measure`);
    with `backward`, gradients added into `g`."""
    w_e, w_pos, w_q, w_v, w_in, b_in, w_out_t, b_out, w_u = w
    g_w_e, g_w_pos, g_w_q, g_w_v, g_w_in, g_b_in, g_w_out_t, g_b_out, g_w_u = g
    (resid, root1, z, score, zv, shared, g_score, g_zv, g_z, g_resid, attn, g_attn, z_attn, norm2, z_bar, pre, cdf,
     post, z_out, logits, prob, top, den, g_z_out, g_pre, g_z_attn, root2) = ws
    batch = targets.shape[0]
    table = v * n_ctx
    scale = 1.0 / math.sqrt(d)
    # the (token, position) table: z = RMS(W_E[token] + W_pos[pos]), its score and its value z W_V
    high, low = -np.inf, np.inf
    for r in range(table):
        token, pos = r // n_ctx, r % n_ctx
        for i in range(d):
            resid[r, i] = w_e[token, i] + w_pos[pos, i]
        root1[r] = _root(resid[r])
        dot = 0.0
        for i in range(d):
            z[r, i] = resid[r, i] / (root1[r] + eps)
            dot += z[r, i] * w_q[i]
        score[r] = dot * scale
        high, low = max(high, score[r]), min(low, score[r])
        for j in range(d):
            acc = 0.0
            for i in range(d):
                acc += z[r, i] * w_v[i, j]
            zv[r, j] = acc
    is_shared = high - low <= _SHARED_SPAN
    if is_shared:
        for r in range(table):
            shared[r] = _exp(score[r] - high)
    if backward:
        g_score[:] = 0.0
        g_zv[:] = 0.0
    loss_sum, hits = 0.0, 0.0
    for b0 in range(0, batch, _BLOCK):
        nb = min(_BLOCK, batch - b0)
        # attention: a softmax over positions of the looked-up scores, then the values it mixes
        for b in range(nb):
            base = (b0 + b) * n_ctx
            total = 0.0
            if is_shared:
                for t in range(n_ctx):
                    attn[b, t] = shared[index[base + t]]
                    total += attn[b, t]
            else:
                most = -np.inf
                for t in range(n_ctx):
                    most = max(most, score[index[base + t]])
                for t in range(n_ctx):
                    attn[b, t] = _exp(score[index[base + t]] - most)
                    total += attn[b, t]
            for t in range(n_ctx):
                attn[b, t] /= total
            for i in range(d):
                acc = 0.0
                for t in range(n_ctx):
                    acc += attn[b, t] * zv[index[base + t], i]
                z_attn[i, b] = acc
        # the rest, sequence by sequence in vector lanes: the norm, the MLP (GELU(x) = x Phi(x)), the logits
        for b in range(nb):
            norm2[b] = 0.0
        for i in range(d):
            for b in range(nb):
                norm2[b] += z_attn[i, b] * z_attn[i, b]
        for b in range(nb):
            root2[b] = math.sqrt(norm2[b] / d)
            norm2[b] = root2[b] + eps
        for i in range(d):
            for b in range(nb):
                z_bar[i, b] = z_attn[i, b] / norm2[b]
        for j in range(h):
            for b in range(nb):
                x = b_in[j]
                for i in range(d):
                    x += z_bar[i, b] * w_in[i, j]
                pre[j, b] = x
                cdf[j, b] = 0.5 * (1.0 + erf(x * _INV_SQRT2))
        for i in range(d):
            bias = b_out[i]
            if attn_out:
                for b in range(nb):
                    z_out[i, b] = z_attn[i, b] + bias
            else:
                for b in range(nb):
                    z_out[i, b] = z_bar[i, b] + bias
            for j in range(h):
                weight = w_out_t[i, j]
                for b in range(nb):
                    z_out[i, b] += pre[j, b] * cdf[j, b] * weight
        for b in range(nb):
            top[b] = -np.inf
        for c in range(v):
            for b in range(nb):
                logits[c, b] = 0.0
            for i in range(d):
                weight = w_u[i, c]
                for b in range(nb):
                    logits[c, b] += z_out[i, b] * weight
            for b in range(nb):
                top[b] = max(top[b], logits[c, b])
        for b in range(nb):
            den[b] = 0.0
        for c in range(v):
            for b in range(nb):
                prob[c, b] = _exp(logits[c, b] - top[b])
                den[b] += prob[c, b]
        if measure:
            for b in range(nb):
                target = targets[b0 + b]
                loss_sum += math.log(den[b]) + top[b] - logits[target, b]
                best = 0
                for c in range(1, v):
                    if logits[c, b] > logits[best, b]:
                        best = c
                hits += 1.0 if best == target else 0.0
        if not backward:
            continue
        # backward: the logits, the unembedding and the MLP; a weight's sum over sequences in order
        for c in range(v):
            for b in range(nb):
                prob[c, b] = (prob[c, b] / den[b] - (1.0 if c == targets[b0 + b] else 0.0)) / batch
        for i in range(d):
            for c in range(v):
                acc = g_w_u[i, c]
                for b in range(nb):
                    acc += z_out[i, b] * prob[c, b]
                g_w_u[i, c] = acc
            for b in range(nb):
                g_z_out[i, b] = 0.0
            for c in range(v):
                weight = w_u[i, c]
                for b in range(nb):
                    g_z_out[i, b] += prob[c, b] * weight
            acc = g_b_out[i]
            for b in range(nb):
                acc += g_z_out[i, b]
            g_b_out[i] = acc
            for j in range(h):
                acc = g_w_out_t[i, j]
                for b in range(nb):
                    acc += g_z_out[i, b] * (pre[j, b] * cdf[j, b])
                g_w_out_t[i, j] = acc
        for j in range(h):
            for b in range(nb):
                acc = 0.0
                for i in range(d):
                    acc += w_out_t[i, j] * g_z_out[i, b]
                x = pre[j, b]
                g_pre[j, b] = acc * (cdf[j, b] + x * _exp(-0.5 * x * x) * _INV_SQRT2PI)
            acc = g_b_in[j]
            for b in range(nb):
                acc += g_pre[j, b]
            g_b_in[j] = acc
        for i in range(d):
            for j in range(h):
                acc = g_w_in[i, j]
                for b in range(nb):
                    acc += z_bar[i, b] * g_pre[j, b]
                g_w_in[i, j] = acc
            if attn_out:
                for b in range(nb):
                    g_z_attn[i, b] = 0.0
            else:
                for b in range(nb):
                    g_z_attn[i, b] = g_z_out[i, b]
            for j in range(h):
                weight = w_in[i, j]
                for b in range(nb):
                    g_z_attn[i, b] += weight * g_pre[j, b]
        # through the norm (g_z_attn holds the gradient of z_bar until here), then the attention
        for b in range(nb):
            top[b] = 0.0
        for i in range(d):
            for b in range(nb):
                top[b] += g_z_attn[i, b] * z_attn[i, b]
        for b in range(nb):
            top[b] = top[b] / (norm2[b] * norm2[b] * max(root2[b], 1e-30) * d)
        for i in range(d):
            for b in range(nb):
                g_z_attn[i, b] = g_z_attn[i, b] / norm2[b] - z_attn[i, b] * top[b]
            if attn_out:
                for b in range(nb):
                    g_z_attn[i, b] += g_z_out[i, b]
        for b in range(nb):
            base = (b0 + b) * n_ctx
            mean = 0.0
            for t in range(n_ctx):
                acc = 0.0
                for i in range(d):
                    acc += g_z_attn[i, b] * zv[index[base + t], i]
                    g_zv[index[base + t], i] += attn[b, t] * g_z_attn[i, b]
                g_attn[t] = acc
                mean += attn[b, t] * acc
            for t in range(n_ctx):
                g_score[index[base + t]] += attn[b, t] * (g_attn[t] - mean)
    if backward:
        _table_backward(g_score, g_zv, z, resid, root1, w_q, w_v, g_w_e, g_w_pos, g_w_q, g_w_v, g_z, g_resid, n_ctx,
                        d, eps)
    return loss_sum, hits


def _table_backward(g_score, g_zv, z, resid, root1, w_q, w_v, g_w_e, g_w_pos, g_w_q, g_w_v, g_z, g_resid, n_ctx, d,
                    eps):
    """The table's score and value gradients into W_Q, W_V, and through the norm into W_E and W_pos."""
    scale = 1.0 / math.sqrt(d)
    for r in range(g_score.shape[0]):
        token, pos = r // n_ctx, r % n_ctx
        g_s = g_score[r] * scale
        for i in range(d):
            g_w_q[i] += z[r, i] * g_s
            acc = g_s * w_q[i]
            for j in range(d):
                g_w_v[i, j] += z[r, i] * g_zv[r, j]
                acc += g_zv[r, j] * w_v[i, j]
            g_z[i] = acc
        _rms_backward(g_z, resid[r], root1[r] + eps, root1[r], g_resid)
        for i in range(d):
            g_w_e[token, i] += g_resid[i]
            g_w_pos[pos, i] += g_resid[i]


# erf(x) as an odd rational function of x on [-4, 4] (beyond, erf is +-1 in float32): largest error
# 6.5e-8 over [-6, 6] against libm's erf (tests/test_fused.py), float32's resolution near 1, and no
# library call in the MLP's loop, which takes it from ~18 to ~4 ns a value (and lets it run in vector lanes).
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = _ERF_P  # named: Horner's rule written out compiles to straight-line code
_Q0, _Q1, _Q2, _Q3, _Q4 = _ERF_Q


def erf(x):
    x = min(max(x, -4.0), 4.0)
    x2 = x * x
    p = (((((_P6 * x2 + _P5) * x2 + _P4) * x2 + _P3) * x2 + _P2) * x2 + _P1) * x2 + _P0
    q = (((_Q4 * x2 + _Q3) * x2 + _Q2) * x2 + _Q1) * x2 + _Q0
    return x * p / q


# exp(y) for y <= 0 in plain arithmetic (so that it runs in vector lanes, the same bits at any width):
# exp(y / 2048) by its (5, 5) Pade approximant (|y / 2048| <= 0.342: error below 1e-15), then squared
# 11 times. Relative error below 3e-12 against libm's exp over [-700, 0] (tests/test_fused.py). Below
# -700 it returns exp(-700) (~1e-304), which keeps every value a normal number: its uses add it to at
# least 1 (softmaxes over their largest term) or multiply it into a finite value.
_E0, _E1, _E2, _E3, _E4, _E5 = 1.0, 0.5, 1.0 / 9.0, 1.0 / 72.0, 1.0 / 1008.0, 1.0 / 30240.0


def _exp(y):
    x = max(y, -700.0) * (1.0 / 2048.0)
    x2 = x * x
    even = (_E4 * x2 + _E2) * x2 + _E0
    odd = ((_E5 * x2 + _E3) * x2 + _E1) * x
    p = (even + odd) / (even - odd)
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p  # 11 squarings


def _root(x):
    """sqrt(mean(x**2))."""
    total = 0.0
    for i in range(x.shape[0]):
        total += x[i] * x[i]
    return math.sqrt(total / x.shape[0])


def _rms_backward(grad, x, norm, root, out):
    """out = gradient of x / norm (norm = root + eps, root = sqrt(mean(x**2))) given the output's `grad`."""
    d = x.shape[0]
    dot = 0.0
    for i in range(d):
        dot += grad[i] * x[i]
    coefficient = dot / (norm * norm * max(root, 1e-30) * d)
    for i in range(d):
        out[i] = grad[i] / norm - x[i] * coefficient


_COMPILED: list = []  # the compiled step and stretch, once made
_COMPILING = threading.Lock()


def _kernel():
    """The compiled step (numba, imported and compiled at first use; compiled code is cached on disk).

    Two groups' threads may ask at once: the lock makes one of them compile (jitting the module's
    functions twice would fail) and the other wait for it."""
    with _COMPILING:
        if not _COMPILED:
            from numba import njit

            jit = njit(cache=True, nogil=True, error_model="numpy")
            global erf, _exp, _root, _rms_backward, _weights, _zero, _unpack, _store, _workspace
            global _table_backward, _run_d, _run, _adam
            erf, _exp, _root, _rms_backward, _weights, _zero, _unpack, _store, _workspace = map(
                jit, (erf, _exp, _root, _rms_backward, _weights, _zero, _unpack, _store, _workspace))
            _table_backward, _adam, _run_d, _run = map(jit, (_table_backward, _adam, _run_d, _run))
            _COMPILED.extend((jit(_step), jit(_stretch)))
    return _COMPILED[0]


def _stretch_kernel():
    """The compiled `_stretch` (made with the step)."""
    _kernel()
    return _COMPILED[1]
