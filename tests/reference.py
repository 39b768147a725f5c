"""An independent plain-PyTorch implementation of the paper's five equations, from weights alone.

It shares no code with circuitpath: the tests hold the hooked model and the engine to it.
"""

import math

import torch
import torch.nn.functional as F


def rms(x, eps=1e-5):
    return x / (torch.sqrt(torch.mean(x * x, dim=-1, keepdim=True)) + eps)


def reference_forward(w, tokens, eps=1e-5, residual="attn_out"):
    """Every intermediate of the five equations, for weights `w` keyed by contract name.

    `residual`: what equation 4 adds the MLP to, z_A ("attn_out", the paper's code) or z̄_A
    ("normalized", the paper's text)."""
    d = w["W_E"].shape[1]
    out = {}
    out["embed"] = w["W_E"][tokens]  # [batch, pos, d]
    out["pos_embed"] = w["W_pos"].unsqueeze(0).expand_as(out["embed"])
    out["resid_pre"] = out["embed"] + out["pos_embed"]
    z = rms(out["resid_pre"], eps)  # (1)
    out["z"] = z
    out["scores"] = torch.matmul(z, w["W_Q"]) / math.sqrt(d)  # [batch, pos]
    out["pattern"] = torch.softmax(out["scores"], dim=1)
    out["v"] = torch.matmul(z, w["W_V"])
    out["z_attn"] = (out["pattern"].unsqueeze(-1) * out["v"]).sum(dim=1)  # (2)
    out["z_bar"] = rms(out["z_attn"], eps)  # (3)
    out["mlp_pre"] = out["z_bar"] @ w["W_in"] + w["b_in"]
    out["mlp_post"] = F.gelu(out["mlp_pre"])
    out["mlp_out"] = out["mlp_post"] @ w["W_out"] + w["b_out"]
    out["z_out"] = {"attn_out": out["z_attn"], "normalized": out["z_bar"]}[residual] + out["mlp_out"]  # (4)
    w_u = w["W_U"] if "W_U" in w else w["W_E"].T
    out["logits"] = out["z_out"] @ w_u  # (5)
    return out


def reference_train(w, x, y, phases_lr_steps, residual="attn_out"):
    """Plain training loop: torch.optim.Adam on the reference function, one fresh optimiser a phase."""
    w = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    for lr, steps, xs, ys in phases_lr_steps:
        opt = torch.optim.Adam(list(w.values()), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(reference_forward(w, xs, residual=residual)["logits"], ys).backward()
            opt.step()
    return {k: v.detach() for k, v in w.items()}


# ---- hand-written hooks, one forward pass per index: what batched patching and ablation must equal ----
def logits_with_each_mask_replaced(model, tokens, hook, masks, replacement):
    """For each mask, logits with that part of `hook` taken from `replacement` (one pass and hook each)."""
    for mask in masks:
        def replace(activation, hook, mask=mask):
            out = activation.clone()
            out[:, mask] = replacement[:, mask]
            return out

        with torch.no_grad():
            yield model.run_with_hooks(tokens, fwd_hooks=[(hook, replace)])


def patch_loop_reference(model, hook, clean, corrupted, clean_labels, corrupted_labels, *, over=(), metric="logit_diff"):
    """Effects of patching each index of `over` from the clean run into the corrupted one."""
    from circuitpath.analysis.patching import HOOK_AXES, METRICS, axis_masks

    _, cache = model.run_with_cache(clean, names_filter=hook)
    source = cache[hook]
    masks = axis_masks(source.shape[1:], hook, tuple(over))
    effects = [METRICS[metric](logits, clean_labels, corrupted_labels)
               for logits in logits_with_each_mask_replaced(model, corrupted, hook, masks, source)]
    sizes = [source.shape[1 + HOOK_AXES[hook].index(a)] for a in over]
    return torch.stack(effects).view(sizes)


def ablate_loop_reference(model, tokens, labels, hook, mask_list, replacement):
    """Accuracy with each mask's part of `hook` replaced by `replacement`."""
    return [float((logits.argmax(-1) == labels).float().mean())
            for logits in logits_with_each_mask_replaced(model, tokens, hook, mask_list, replacement)]
