"""A sentence-transformers BERT model (Transformer -> mean Pooling -> Normalize) run on
torch directly, for start-up time.

Importing ``sentence_transformers`` (with ``transformers``, scikit-learn and scipy behind
it) costs 4-6 s of a 11-13 s start on a 2-core machine; this module needs only torch,
``tokenizers`` and ``safetensors`` (together ~2 s). It reads the same files
sentence-transformers reads (``modules.json``, ``sentence_bert_config.json``,
``1_Pooling/config.json``, ``config.json``, ``tokenizer.json``, ``model.safetensors``),
tokenizes the same way (the model's fast tokenizer, truncated at ``max_seq_length``,
padded to the longest text of a batch, texts sorted by length first) and computes the
same thing, checked against sentence-transformers in ``tests/unit/test_bert_embedder.py``
(cosine >= 0.9999). :func:`load_embedder` falls back to sentence-transformers for any
model directory it does not recognise.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from incident_responder.backends.embedding.sentence_transformer import (
    SentenceTransformerEmbedder,
    packaged_model_path,
)
from incident_responder.errors import ConfigError

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def bert_layout(path: Path) -> dict[str, Any] | None:
    """The model's settings if ``path`` holds a BERT encoder with mean pooling and
    normalization in the sentence-transformers layout, else None."""
    try:
        listed = _read_json(path / "modules.json")
        modules = [m["type"] for m in listed]
        pooling_dir = next(m["path"] for m in listed if m["type"] == _POOLING)
        pooling = _read_json(path / pooling_dir / "config.json")
        config = _read_json(path / "config.json")
        st_config = _read_json(path / "sentence_bert_config.json")
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    mean_only = pooling.get("pooling_mode_mean_tokens") is True and not any(
        v is True
        for k, v in pooling.items()
        if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    )
    if (
        modules != [_TRANSFORMER, _POOLING, _NORMALIZE]
        or not mean_only
        or config.get("model_type") != "bert"
        or config.get("hidden_act") != "gelu"
        or config.get("position_embedding_type", "absolute") != "absolute"
        or not (path / "tokenizer.json").is_file()
        or not (path / "model.safetensors").is_file()
    ):
        return None
    return {
        **config,
        "max_seq_length": int(st_config.get("max_seq_length") or config["max_position_embeddings"]),
        "do_lower_case": bool(st_config.get("do_lower_case", False)),
    }


class BertEmbedder:
    """Texts -> unit vectors, as ``SentenceTransformer.encode(..., normalize_embeddings=True)``."""

    def __init__(self, model_path: Path | None = None, *, batch_size: int = 64, threads: int = 0) -> None:
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        path = model_path or packaged_model_path()
        config = bert_layout(path)
        if config is None:
            raise ConfigError(f"no BERT sentence-transformers model with mean pooling at {path}")
        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self._batch_size = batch_size
        self._max_len = min(config["max_seq_length"], config["max_position_embeddings"])
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config["layer_norm_eps"])
        self._dim = int(config["hidden_size"])
        self._lower = config["do_lower_case"]  # sentence-transformers lowercases before tokenizing
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(self._max_len)
        self._tokenizer.no_padding()
        weights = load_file(str(path / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self._w = {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)}
        # the sentence-transformers encode() runs under inference mode in one thread at a time
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([t.lower() for t in texts] if self._lower else list(texts))
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        with self._lock, self._torch.inference_mode():
            for start in range(0, len(order), self._batch_size):
                chunk = order[start : start + self._batch_size]
                out[chunk] = self._forward([encodings[i].ids for i in chunk]).numpy()
        return out

    def _forward(self, ids: list[list[int]]) -> Any:
        torch = self._torch
        functional = torch.nn.functional
        w = self._w
        width = max(len(row) for row in ids)
        tokens = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True

        def layer_norm(x: Any, name: str) -> Any:
            return functional.layer_norm(x, (self._dim,), w[f"{name}.weight"], w[f"{name}.bias"], self._eps)

        def linear(x: Any, name: str) -> Any:
            return functional.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])

        hidden = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:width]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        hidden = layer_norm(hidden, "embeddings.LayerNorm")
        batch, head_dim = len(ids), self._dim // self._heads
        attend = mask[:, None, None, :]  # keys a query may look at: the real tokens

        def heads(x: Any) -> Any:
            return x.view(batch, width, self._heads, head_dim).transpose(1, 2)

        for n in range(self._layers):
            p = f"encoder.layer.{n}"
            q = heads(linear(hidden, f"{p}.attention.self.query"))
            k = heads(linear(hidden, f"{p}.attention.self.key"))
            v = heads(linear(hidden, f"{p}.attention.self.value"))
            context = functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
            context = context.transpose(1, 2).reshape(batch, width, self._dim)
            hidden = layer_norm(
                linear(context, f"{p}.attention.output.dense") + hidden, f"{p}.attention.output.LayerNorm"
            )
            inner = functional.gelu(linear(hidden, f"{p}.intermediate.dense"))
            hidden = layer_norm(linear(inner, f"{p}.output.dense") + hidden, f"{p}.output.LayerNorm")
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return functional.normalize(pooled, p=2.0, dim=1)


def load_embedder(
    model_path: Path | None = None, *, batch_size: int = 64, threads: int = 0
) -> BertEmbedder | SentenceTransformerEmbedder:
    """The fastest embedder that computes the model's own vectors: :class:`BertEmbedder` for a
    BERT mean-pooling model (the packaged default), else sentence-transformers."""
    # Never reach for a model hub: the weights are local or start-up fails.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = model_path or packaged_model_path()
    if bert_layout(path) is not None:
        return BertEmbedder(path, batch_size=batch_size, threads=threads)
    return SentenceTransformerEmbedder(path, batch_size=batch_size, threads=threads)
