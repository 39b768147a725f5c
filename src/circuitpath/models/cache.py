"""The activation cache of the model: TransformerLens's `ActivationCache`, with this architecture's limits.

Shorthand keys (`cache["pattern", 0]`), `stack_activation`, `get_neuron_results` and
`stack_neuron_results` work as for any TransformerLens model. Methods that assume a residual stream of
one shape from the embeddings to the logits, or heads with an output matrix W_O, do not apply here: the
single query sums the positions, so the stream is [batch, pos, d_model] up to the attention
(`blocks.0.hook_resid_pre`) and [batch, d_model] after it (z_A, z̄_A, z_O), and the one head's output is
z_A itself. Those methods raise `NotApplicableError` saying so and what to read instead.
"""

from __future__ import annotations

from transformer_lens import ActivationCache

from circuitpath.errors import HookError, NotApplicableError

_SHAPES = ("the single query sums the positions, so the residual stream is [batch, pos, d_model] up to the "
           "attention and [batch, d_model] after it")
_NO_HEADS = ("the attention is one head with no output matrix W_O: its output is z_A, "
             "cache['attn_out', 0] ('blocks.0.hook_attn_out')")


class NamedCache(ActivationCache):
    """`ActivationCache` whose look-up of an activation it does not hold names what it holds (a HookError, which is a
    KeyError, rather than TransformerLens's bare KeyError)."""

    def __getitem__(self, key):
        try:
            return super().__getitem__(key)
        except KeyError:
            raise HookError(f"this cache holds no activation {key!r}; it holds {', '.join(self.cache_dict)}") from None


class CrossAttentionCache(NamedCache):
    """`ActivationCache` of a `CrossAttentionTransformer` (what its `run_with_cache` returns)."""

    def _refuse(self, method: str, reason: str, instead: str) -> NotApplicableError:
        return NotApplicableError(f"{method} does not apply to this model: {reason}; {instead}")

    def accumulated_resid(self, *args, **kwargs):
        raise self._refuse("accumulated_resid", _SHAPES,
                           "read cache['resid_pre', 0], cache['attn_out', 0] and cache['resid_post', 0]")

    def logit_lens(self, *args, **kwargs):
        raise self._refuse("logit_lens", _SHAPES, "the logits are cache['resid_post', 0] @ model.W_U")

    def decompose_resid(self, layer=None, mlp_input=False, mode="all", apply_ln=False, pos_slice=None,
                        incl_embeds=True, return_labels=False):
        """z_O as the stack [z_A, MLP output] (with incl_embeds=False, for the residual that carries z_A)."""
        if incl_embeds:
            raise self._refuse("decompose_resid with incl_embeds=True", _SHAPES,
                               "pass incl_embeds=False for z_O's parts after the attention")
        if self.model.cfg.residual != "attn_out":
            raise self._refuse("decompose_resid", "the MLP's residual carries RMS(z_A) (residual='normalized'), "
                               "not z_A", "z_O is cache['normalized', 0, 'ln2'] + cache['mlp_out', 0]")
        return super().decompose_resid(layer, mlp_input, mode, apply_ln, pos_slice, incl_embeds, return_labels)

    def compute_head_results(self, *args, **kwargs):
        raise self._refuse("compute_head_results", _NO_HEADS, "no per-head results to compute")

    def stack_head_results(self, *args, **kwargs):
        raise self._refuse("stack_head_results", _NO_HEADS, "stack it with cache.stack_activation('attn_out')")

    def get_full_resid_decomposition(self, *args, **kwargs):
        raise self._refuse("get_full_resid_decomposition", _NO_HEADS + "; " + _SHAPES,
                           "use decompose_resid(incl_embeds=False) or stack_neuron_results(1)")

    def apply_ln_to_stack(self, *args, **kwargs):
        raise self._refuse("apply_ln_to_stack", "there is no final norm before the unembedding",
                           "multiply a stack of [batch, d_model] parts by model.W_U directly")

    def logit_attrs(self, *args, **kwargs):
        raise self._refuse("logit_attrs", "there is no final norm before the unembedding",
                           "a part's logit contribution is part @ model.W_U")
