"""The training step of small models as one compiled loop per run: for d = 2 and mini-batches of 32.

At the paper's d = 32 and full batch a step is a handful of large products, and `engine.py` runs
them as torch kernels. At d = 2, h = 32 and 32 sequences an update is a few microseconds of
arithmetic, and a torch step (~150 kernel calls) costs a hundred times that in dispatch. Here the
whole forward and backward of one run is one numba-compiled loop, in the same order on every
machine and whatever else runs: the runs of a group are independent iterations, so a run's bytes
are a function of its config alone, as with the engine (and, with no vector reassociation and one
libm, even across CPU kernel sets). Arithmetic is in float64 within a run, stored as float32.

Which path a run takes is a function of its config (`takes_fused_path`), never of a measurement.
Tests hold this path to the hooked model (losses and gradients).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from torch import Tensor

from circuitpath.config import ModelConfig

#: Runs whose model is at most this wide train on the fused path (on the CPU).
FUSED_MAX_D = 4

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


def takes_fused_path(cfg: ModelConfig, device: torch.device) -> bool:
    """Whether runs of this model train on the fused path: small models on the CPU."""
    return device.type == "cpu" and cfg.d_model <= FUSED_MAX_D


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
    """Every run in turn, all its updates: gradient of the batch (`_run`), then Adam."""
    runs, size = theta.shape
    grad = np.zeros(size, dtype=np.float32)
    for s in range(runs):
        for u in range(count):
            start = first + u * stride
            w = _unpack(theta[s], off, n_ctx, d, h, nv)
            g = (np.zeros((nv, d)), np.zeros((n_ctx, d)), np.zeros(d), np.zeros((d, d)), np.zeros((d, h)),
                 np.zeros(h), np.zeros((d, h)), np.zeros(d), np.zeros((d, nv)))
            _run(w, g, index[s, start * n_ctx:(start + batch) * n_ctx], targets[s, start:start + batch], n_ctx,
                 d, h, nv, attn_out, eps, True)
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
    for s in range(runs):
        w = _unpack(theta[s], off, n_ctx, d, h, v)
        g = (np.zeros((v, d)), np.zeros((n_ctx, d)), np.zeros(d), np.zeros((d, d)), np.zeros((d, h)), np.zeros(h),
             np.zeros((d, h)), np.zeros(d), np.zeros((d, v)))
        loss, hits = _run(w, g, index[s], targets[s], n_ctx, d, h, v, attn_out, eps, backward)
        losses[s] = loss / batch
        if backward:
            _store(g, out[s], off, d, h, v)
        else:
            out[s, 0] = hits / batch


def _unpack(row, off, n_ctx, d, h, v):
    """One run's weights as float64 arrays: W_E, W_pos, W_Q, W_V, W_in, b_in, W_out transposed, b_out, W_U."""
    w_e = row[off[0]:off[0] + v * d].astype(np.float64).reshape((v, d))
    w_pos = row[off[1]:off[1] + n_ctx * d].astype(np.float64).reshape((n_ctx, d))
    w_q = row[off[2]:off[2] + d].astype(np.float64)
    w_v = row[off[3]:off[3] + d * d].astype(np.float64).reshape((d, d))
    w_in = row[off[4]:off[4] + d * h].astype(np.float64).reshape((d, h))
    b_in = row[off[5]:off[5] + h].astype(np.float64)
    w_out_t = np.ascontiguousarray(row[off[6]:off[6] + h * d].astype(np.float64).reshape((h, d)).T)
    b_out = row[off[7]:off[7] + d].astype(np.float64)
    if off[8] < 0:
        w_u = np.ascontiguousarray(w_e.T)
    else:
        w_u = row[off[8]:off[8] + d * v].astype(np.float64).reshape((d, v))
    return w_e, w_pos, w_q, w_v, w_in, b_in, w_out_t, b_out, w_u


def _store(g, row, off, d, h, v):
    """Write the gradients into a parameter row (float32), W_U's into W_E's rows when tied."""
    g_w_e, g_w_pos, g_w_q, g_w_v, g_w_in, g_b_in, g_w_out_t, g_b_out, g_w_u = g
    if off[8] < 0:
        g_w_e = g_w_e + g_w_u.T
    else:
        row[off[8]:off[8] + d * v] = g_w_u.ravel()
    row[off[0]:off[0] + g_w_e.size] = g_w_e.ravel()
    row[off[1]:off[1] + g_w_pos.size] = g_w_pos.ravel()
    row[off[2]:off[2] + d] = g_w_q
    row[off[3]:off[3] + d * d] = g_w_v.ravel()
    row[off[4]:off[4] + d * h] = g_w_in.ravel()
    row[off[5]:off[5] + h] = g_b_in
    row[off[6]:off[6] + h * d] = np.ascontiguousarray(g_w_out_t.T).ravel()
    row[off[7]:off[7] + d] = g_b_out


def _run(w, g, index, targets, n_ctx, d, h, v, attn_out, eps, backward):
    """Sum of losses and count of correct answers of one run over its sequences; gradients into `g`."""
    w_e, w_pos, w_q, w_v, w_in, b_in, w_out_t, b_out, w_u = w
    g_w_e, g_w_pos, g_w_q, g_w_v, g_w_in, g_b_in, g_w_out_t, g_b_out, g_w_u = g
    batch = targets.shape[0]
    table = v * n_ctx
    scale = 1.0 / math.sqrt(d)
    # the (token, position) table: z = RMS(W_E[token] + W_pos[pos]), its score and its value z W_V
    resid = np.empty((table, d))
    root1 = np.empty(table)
    z = np.empty((table, d))
    score = np.empty(table)
    zv = np.zeros((table, d))
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
        for i in range(d):
            for j in range(d):
                zv[r, j] += z[r, i] * w_v[i, j]
    g_score = np.zeros(table)
    g_zv = np.zeros((table, d))
    attn, g_attn = np.empty(n_ctx), np.empty(n_ctx)
    z_attn, z_bar, z_out, r = np.empty(d), np.empty(d), np.empty(d), np.empty(d)
    pre, cdf, post, g_post, g_pre = np.empty(h), np.empty(h), np.empty(h), np.empty(h), np.empty(h)
    logits, g_logits = np.empty(v), np.empty(v)
    g_z_out, g_z_bar, g_z_attn = np.empty(d), np.empty(d), np.empty(d)
    loss_sum, hits = 0.0, 0.0
    for b in range(batch):
        rows = index[b * n_ctx:(b + 1) * n_ctx]
        # attention: a softmax over positions of the looked-up scores, then the values it mixes
        top = -np.inf
        for t in range(n_ctx):
            top = max(top, score[rows[t]])
        den = 0.0
        for t in range(n_ctx):
            attn[t] = math.exp(score[rows[t]] - top)
            den += attn[t]
        z_attn[:] = 0.0
        for t in range(n_ctx):
            attn[t] /= den
            for i in range(d):
                z_attn[i] += attn[t] * zv[rows[t], i]
        root2 = _root(z_attn)
        norm2 = root2 + eps
        for i in range(d):
            z_bar[i] = z_attn[i] / norm2
            r[i] = z_attn[i] if attn_out else z_bar[i]
        # the MLP, GELU(x) = x Phi(x), and the residual
        pre[:] = b_in
        for i in range(d):
            for j in range(h):
                pre[j] += z_bar[i] * w_in[i, j]
        for j in range(h):
            cdf[j] = 0.5 * (1.0 + erf(pre[j] * _INV_SQRT2))
            post[j] = pre[j] * cdf[j]
        for i in range(d):
            acc = r[i] + b_out[i]
            for j in range(h):
                acc += post[j] * w_out_t[i, j]
            z_out[i] = acc
        top = -np.inf
        for c in range(v):
            acc = 0.0
            for i in range(d):
                acc += z_out[i] * w_u[i, c]
            logits[c] = acc
            top = max(top, acc)
        den = 0.0
        for c in range(v):
            g_logits[c] = math.exp(logits[c] - top)
            den += g_logits[c]
        target = targets[b]
        loss_sum += math.log(den) + top - logits[target]
        best = 0
        for c in range(1, v):
            if logits[c] > logits[best]:
                best = c
        hits += 1.0 if best == target else 0.0
        if not backward:
            continue
        # backward: the logits, the unembedding and the MLP
        g_z_out[:] = 0.0
        for c in range(v):
            g_logits[c] = (g_logits[c] / den - (1.0 if c == target else 0.0)) / batch
            for i in range(d):
                g_w_u[i, c] += z_out[i] * g_logits[c]
                g_z_out[i] += g_logits[c] * w_u[i, c]
        g_post[:] = 0.0
        for i in range(d):
            g_b_out[i] += g_z_out[i]
            for j in range(h):
                g_w_out_t[i, j] += g_z_out[i] * post[j]
                g_post[j] += w_out_t[i, j] * g_z_out[i]
        for j in range(h):
            g_pre[j] = g_post[j] * (cdf[j] + pre[j] * math.exp(-0.5 * pre[j] * pre[j]) * _INV_SQRT2PI)
            g_b_in[j] += g_pre[j]
        for i in range(d):
            acc = g_z_out[i] if not attn_out else 0.0
            for j in range(h):
                g_w_in[i, j] += z_bar[i] * g_pre[j]
                acc += w_in[i, j] * g_pre[j]
            g_z_bar[i] = acc
        _rms_backward(g_z_bar, z_attn, norm2, root2, g_z_attn)
        if attn_out:
            for i in range(d):
                g_z_attn[i] += g_z_out[i]
        # backward: attention into the table's scores and values
        mean = 0.0
        for t in range(n_ctx):
            acc = 0.0
            for i in range(d):
                acc += g_z_attn[i] * zv[rows[t], i]
                g_zv[rows[t], i] += attn[t] * g_z_attn[i]
            g_attn[t] = acc
            mean += attn[t] * acc
        for t in range(n_ctx):
            g_score[rows[t]] += attn[t] * (g_attn[t] - mean)
    if backward:
        _table_backward(g_score, g_zv, z, resid, root1, w_q, w_v, g_w_e, g_w_pos, g_w_q, g_w_v, n_ctx, d, eps)
    return loss_sum, hits


def _table_backward(g_score, g_zv, z, resid, root1, w_q, w_v, g_w_e, g_w_pos, g_w_q, g_w_v, n_ctx, d, eps):
    """The table's score and value gradients into W_Q, W_V, and through the norm into W_E and W_pos."""
    scale = 1.0 / math.sqrt(d)
    g_z, g_resid = np.empty(d), np.empty(d)
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
# library call in the MLP's loop, which takes it from ~18 to ~4 ns a value.
_ERF_P = (-1.60960333262415e-02, -2.95459980854025e-03, -7.34990630326855e-04, -5.69250639462346e-05,
          -2.10102402082508e-06, 2.77068142495902e-08, -2.72614225801306e-10)
_ERF_Q = (-1.42647390514189e-02, -7.37332916720468e-03, -1.68282697438203e-03, -2.13374055278905e-04,
          -1.45660718464996e-05)


def erf(x):
    x = min(max(x, -4.0), 4.0)
    x2 = x * x
    p = _ERF_P[6]
    for k in range(5, -1, -1):
        p = p * x2 + _ERF_P[k]
    q = _ERF_Q[4]
    for k in range(3, -1, -1):
        q = q * x2 + _ERF_Q[k]
    return x * p / q


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

            jit = njit(cache=True, nogil=True)
            global erf, _root, _rms_backward, _unpack, _store, _table_backward, _run, _adam
            erf, _root, _rms_backward, _unpack, _store, _table_backward = map(
                jit, (erf, _root, _rms_backward, _unpack, _store, _table_backward))
            _adam = jit(_adam)
            _run = jit(_run)
            _COMPILED.extend((jit(_step), jit(_stretch)))
    return _COMPILED[0]


def _stretch_kernel():
    """The compiled `_stretch` (made with the step)."""
    _kernel()
    return _COMPILED[1]
