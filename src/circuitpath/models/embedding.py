"""The embedding, positional embedding and unembedding both models share (TransformerLens's names: W_E, W_pos, W_U).

The models differ only in the shapes: the standard transformer's W_E has a row for its CLS token and its W_pos a row
for the CLS position. Each starts empty; `init_weights` or a checkpoint fills it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn


class Embed(nn.Module):
    def __init__(self, n_tokens: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(n_tokens, d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return F.embedding(tokens, self.W_E)  # W_E[tokens], 5x faster than advanced indexing


class PosEmbed(nn.Module):
    def __init__(self, n_positions: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_positions, d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_pos.expand(tokens.shape[0], -1, -1)


class Unembed(nn.Module):
    def __init__(self, d_model: int, n_tokens: int):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, n_tokens))
