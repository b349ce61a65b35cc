"""A sentence-transformers BERT model (Transformer -> mean Pooling -> Normalize) run on
torch directly, for start-up time.

Importing ``sentence_transformers`` (with ``transformers``, scikit-learn and scipy behind
it) costs 4-6 s of a 11-13 s start on a 2-core machine; this module needs only torch,
``tokenizers`` and ``safetensors`` (together ~2 s). It reads the same files
sentence-transformers reads (``modules.json``, ``sentence_bert_config.json``,
``1_Pooling/config.json``, ``config.json``, ``tokenizer.json``, ``model.safetensors``),
tokenizes the same way (the model's fast tokenizer, truncated at ``max_seq_length``,
padded to the longest text of a batch, texts sorted by length first) and computes the
same thing (as one TorchScript graph, :mod:`.bert_graph`, so a forward pass takes the GIL
once), checked against sentence-transformers in ``tests/unit/test_bert_embedder.py``
(cosine >= 0.9999). :func:`load_embedder` falls back to sentence-transformers for any
model directory it does not recognise.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from incident_responder.backends.embedding.sentence_transformer import (
    SentenceTransformerEmbedder,
    packaged_model_path,
)
from incident_responder.errors import ConfigError
from incident_responder.settings import usable_cores

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
# Texts per pass below which a batch is not split across workers: one thread spends ~13 ms
# of CPU on a lone short text, ~7 ms each on 4, ~5 ms each from 16 on (2-core EPYC).
_MIN_CHUNK = 16


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
        """``threads``: forward passes run at once, one core each (0: one per usable core)."""
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        from incident_responder.backends.embedding.bert_graph import scripted_encoder

        path = model_path or packaged_model_path()
        config = bert_layout(path)
        if config is None:
            raise ConfigError(f"no BERT sentence-transformers model with mean pooling at {path}")
        # Single-threaded passes side by side, not one pass on torch's intra-op pool: a pass
        # on two threads costs 6.4 ms of CPU per text (18 ms for one text alone) against
        # 4.8 (13) on one, and its threads wait for each other whenever the server's other
        # threads hold a core. Process-wide, like every torch thread setting.
        torch.set_num_threads(1)
        self._workers = threads or usable_cores()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="embed")
        self._torch = torch
        self._batch_size = batch_size
        self._max_len = min(config["max_seq_length"], config["max_position_embeddings"])
        self._dim = int(config["hidden_size"])
        self._lower = config["do_lower_case"]  # sentence-transformers lowercases before tokenizing
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(self._max_len)
        self._tokenizer.no_padding()
        weights = load_file(str(path / "model.safetensors"))
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
        self._encoder = scripted_encoder(
            {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)},
            layers=int(config["num_hidden_layers"]),
            heads=int(config["num_attention_heads"]),
            dim=self._dim,
            eps=float(config["layer_norm_eps"]),
        )
        # at most one pass per worker, whichever thread runs it (a caller runs a lone chunk itself)
        self._slots = threading.BoundedSemaphore(self._workers)

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch([t.lower() for t in texts] if self._lower else list(texts))
        # Sorted by length, so each chunk pads little; split so every worker gets a share, but
        # not below _MIN_CHUNK texts a pass (smaller passes cost more CPU per text; under load
        # the micro-batcher keeps the other workers busy with other batches).
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i].ids))
        size = min(self._batch_size, max(_MIN_CHUNK, -(-len(order) // self._workers)))
        chunks = [order[start : start + size] for start in range(0, len(order), size)]
        ids = [[encodings[i].ids for i in chunk] for chunk in chunks]
        if len(chunks) == 1:
            out[chunks[0]] = self._forward(ids[0])
            return out
        for chunk, vectors in zip(chunks, self._pool.map(self._forward, ids), strict=True):
            out[chunk] = vectors
        return out

    def _forward(self, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        # Padded with numpy, then one call into the graph: the GIL is released once per
        # batch, not once per op (see bert_graph).
        lengths = np.array([len(row) for row in ids])
        tokens = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
        mask = self._torch.from_numpy(np.arange(tokens.shape[1]) < lengths[:, None])
        with self._slots, self._torch.no_grad():
            vectors: npt.NDArray[np.float32] = self._encoder(self._torch.from_numpy(tokens), mask).numpy()
        return vectors


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
