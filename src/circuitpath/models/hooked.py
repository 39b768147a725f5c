"""What both hooked models share: the input check, hook look-up and weights loaded by name."""

from __future__ import annotations

import torch
from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from circuitpath.errors import CheckpointError, HookError, InputError


class HookedModel(HookedRootModule):
    """A `HookedRootModule` with a `cfg` (`ModelConfig`), checked tokens and named weights."""

    def check_tokens(self, tokens: Tensor) -> None:
        """Raise InputError unless tokens is an integer tensor [batch, n_ctx] with values < n_tokens."""
        if not isinstance(tokens, Tensor) or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise InputError(f"tokens must be an integer tensor, got {getattr(tokens, 'dtype', type(tokens))}")
        if tokens.ndim != 2 or tokens.shape[1] != self.cfg.n_ctx:
            raise InputError(f"tokens must have shape [batch, {self.cfg.n_ctx}], got {list(tokens.shape)}")
        if not tokens.numel():
            return
        low, high = torch.aminmax(tokens)  # one pass over the tokens
        if low < 0 or high >= self.cfg.n_tokens:
            bad = tokens[(tokens < 0) | (tokens >= self.cfg.n_tokens)][0].item()
            raise InputError(f"token {bad} is out of range [0, {self.cfg.n_tokens})")

    def copy_weights(self, weights: dict[str, Tensor], shapes: dict[str, tuple[int, ...]], parameter_of) -> None:
        """Copy `weights` into the parameters `parameter_of(name)`; names and shapes must be `shapes` exactly."""
        missing, extra = sorted(set(shapes) - set(weights)), sorted(set(weights) - set(shapes))
        if missing or extra:
            raise CheckpointError(f"weights do not match the model: missing {missing}, unexpected {extra}")
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, shape in shapes.items():
                if tuple(weights[name].shape) != shape:
                    raise CheckpointError(f"weight {name} has shape {list(weights[name].shape)}, the config needs {list(shape)}")
                params[parameter_of(name)].copy_(weights[name])

    def lean_forward(self, hook: str | None = None) -> dict:
        """Options of `forward` that compute only what the logits read, when a pass hooks `hook` alone
        (None: no hook): {} where the whole forward is that already (the paper's single query)."""
        return {}

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    def run_with_hooks(self, *model_args, fwd_hooks=(), bwd_hooks=(), **kwargs):
        """TransformerLens's, with every hook named by a string checked first (HookError naming the valid ones)."""
        for name, _ in [*fwd_hooks, *bwd_hooks]:
            if isinstance(name, str):
                self.check_hook(name)
        return super().run_with_hooks(*model_args, fwd_hooks=list(fwd_hooks), bwd_hooks=list(bwd_hooks), **kwargs)

    def run_with_cache(self, *model_args, names_filter=None, **kwargs):
        """TransformerLens's, with a names_filter given as names checked first (a misspelt name would cache nothing)."""
        for name in [names_filter] if isinstance(names_filter, str) else (
                names_filter if isinstance(names_filter, (list, tuple)) else []):
            self.check_hook(name)
        return super().run_with_cache(*model_args, names_filter=names_filter, **kwargs)

    def check_hook(self, name: str) -> HookPoint:
        """The hook point called `name`, or HookError listing the valid names."""
        if name not in self.hook_dict:
            raise HookError(f"unknown hook {name!r}; valid hooks: {', '.join(self.hook_dict)}")
        return self.hook_dict[name]
