"""The BERT encoder + mean pooling + normalize as one TorchScript graph.

Why a graph: run op by op from Python, a forward pass is ~100 torch calls, and each one
releases the GIL and takes it back. In a server whose other threads run Python (the
event loop, ticket writes), every take-back can wait a whole switch interval, so a short
text took many times longer while another thread was busy. A scripted module releases the
GIL once for the whole pass. Same arithmetic, same weights: vectors
equal the eager pass to cosine >= 0.9999999 (``tests/unit/test_bert_embedder.py``).

Imported lazily (it imports torch) by :class:`~.bert.BertEmbedder`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# per layer, in the order _Layer keeps their weights and biases
_LAYER_PARTS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


class _Layer(torch.nn.Module):
    def __init__(self, w: Mapping[str, Tensor], prefix: str, heads: int, dim: int, eps: float) -> None:
        super().__init__()
        self.weights = [w[f"{prefix}.{part}.weight"] for part in _LAYER_PARTS]
        self.biases = [w[f"{prefix}.{part}.bias"] for part in _LAYER_PARTS]
        self.heads = heads
        self.dim = dim
        self.eps = eps

    def forward(self, hidden: Tensor, attend: Tensor) -> Tensor:
        batch, width, head_dim = hidden.size(0), hidden.size(1), self.dim // self.heads
        w, b = self.weights, self.biases
        q = F.linear(hidden, w[0], b[0]).view(batch, width, self.heads, head_dim).transpose(1, 2)
        k = F.linear(hidden, w[1], b[1]).view(batch, width, self.heads, head_dim).transpose(1, 2)
        v = F.linear(hidden, w[2], b[2]).view(batch, width, self.heads, head_dim).transpose(1, 2)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend)
        context = context.transpose(1, 2).reshape(batch, width, self.dim)
        hidden = F.layer_norm(F.linear(context, w[3], b[3]) + hidden, [self.dim], w[4], b[4], self.eps)
        inner = F.gelu(F.linear(hidden, w[5], b[5]))
        return F.layer_norm(F.linear(inner, w[6], b[6]) + hidden, [self.dim], w[7], b[7], self.eps)


class Encoder(torch.nn.Module):
    """(token ids, mask) of a padded batch -> unit vectors of its mean-pooled last layer."""

    def __init__(self, w: Mapping[str, Tensor], layers: int, heads: int, dim: int, eps: float) -> None:
        super().__init__()
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.norm_weight = w["embeddings.LayerNorm.weight"]
        self.norm_bias = w["embeddings.LayerNorm.bias"]
        self.layers = torch.nn.ModuleList(
            [_Layer(w, f"encoder.layer.{n}", heads, dim, eps) for n in range(layers)]
        )
        self.dim = dim
        self.eps = eps

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        hidden = self.word[tokens] + self.position[: tokens.size(1)] + self.token_type
        hidden = F.layer_norm(hidden, [self.dim], self.norm_weight, self.norm_bias, self.eps)
        attend = mask[:, None, None, :]  # keys a query may look at: the real tokens
        for layer in self.layers:
            hidden = layer(hidden, attend)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, p=2.0, dim=1)


def scripted_encoder(w: Mapping[str, Tensor], *, layers: int, heads: int, dim: int, eps: float) -> Any:
    """The frozen TorchScript module of the encoder; call it as ``module(tokens, mask)``."""
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated in favour of torch.export/compile, neither of
        # which gives a GIL-free forward without a C++ compiler at run time; torch is pinned.
        warnings.filterwarnings("ignore", message=r".*torch\.jit", category=DeprecationWarning)
        return torch.jit.freeze(torch.jit.script(Encoder(w, layers, heads, dim, eps).eval()))
