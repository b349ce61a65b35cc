"""A sentence-transformers BERT model (Transformer -> mean Pooling -> Normalize) run
without sentence-transformers, for start-up time and speed.

Importing ``sentence_transformers`` (with ``transformers``, scikit-learn and scipy behind
it) costs 4-6 s of a 11-13 s start on a 2-core machine; this module needs only
``tokenizers`` and an engine (:mod:`.engines`: ONNX Runtime by default, or torch). It
reads the same files sentence-transformers reads (``modules.json``,
``sentence_bert_config.json``, ``1_Pooling/config.json``, ``config.json``,
``tokenizer.json``, ``model.safetensors``), tokenizes the same way (the model's fast
tokenizer, truncated at ``max_seq_length``, padded to the longest text of a batch, texts
sorted by length first) and computes the same thing (the graph of :mod:`.bert_graph`, one
call per pass, so a pass takes the GIL once), checked against sentence-transformers in
``tests/unit/test_bert_embedder.py`` (cosine >= 0.9999). :func:`load_embedder` falls back
to sentence-transformers for any model directory it does not recognise.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import structlog

from incident_responder.backends.embedding.engines import (
    Forward,
    default_cache_dir,
    onnx_engine,
    torch_engine,
)
from incident_responder.backends.embedding.sentence_transformer import (
    SentenceTransformerEmbedder,
    packaged_model_path,
)
from incident_responder.errors import ConfigError
from incident_responder.settings import usable_cores

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
# Texts per pass below which a batch is not split across workers: a pass's CPU per text
# falls until about this many texts, so smaller batches are not worth splitting.
_MIN_CHUNK = 16
# Padded tokens per pass (texts x longest text) that a pass stays under by default: the CPU
# per text is lowest in passes of about this many tokens, whatever the texts' length.
PASS_TOKENS = 512

log = structlog.get_logger(__name__)


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

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        batch_size: int = 64,
        threads: int = 0,
        runtime: Literal["onnx", "torch"] = "onnx",
        onnx_cache_dir: Path | None = None,
        pass_tokens: int = PASS_TOKENS,
        nice: int = 0,
    ) -> None:
        """``batch_size``: texts per pass at most. ``pass_tokens``: padded tokens per pass at
        most (texts x the longest; a longer text gets a pass of its own; 0: no limit).
        ``threads``: forward passes run at once, one core each (0: one per usable core).
        ``nice``: above 0, every pass runs on the embedder's own threads at this lower CPU
        priority (Linux nice, per thread), so that a busy model yields the cores to the
        threads that handle requests; 0: normal priority, and a lone pass runs in the
        calling thread.
        ``runtime``: what runs a pass (:mod:`.engines`); if ONNX Runtime cannot be set up
        (no writable cache dir, no onnxruntime), torch runs it and a warning says why."""
        from tokenizers import Tokenizer

        path = model_path or packaged_model_path()
        config = bert_layout(path)
        if config is None:
            raise ConfigError(f"no BERT sentence-transformers model with mean pooling at {path}")
        forward: Forward | None = None
        if runtime == "onnx":
            try:
                forward = onnx_engine(path, config, onnx_cache_dir or default_cache_dir())
            except Exception as exc:  # no onnxruntime, no writable cache, an export that will not load
                log.warning(
                    "embedding.onnx_unavailable", error=f"{type(exc).__name__}: {exc}", fallback="torch"
                )
        self.runtime: Literal["onnx", "torch"] = "torch" if forward is None else "onnx"
        self._forward_pass: Forward = forward or torch_engine(path, config)
        if not 0 <= nice <= 19:
            raise ConfigError("nice must be 0..19")
        self._workers = threads or usable_cores()
        self._nice = nice
        self._pool = ThreadPoolExecutor(
            self._workers, thread_name_prefix="embed", initializer=_lower_priority, initargs=(nice,)
        )
        self._batch_size = batch_size
        self._pass_tokens = pass_tokens
        self._max_len = min(config["max_seq_length"], config["max_position_embeddings"])
        self._dim = int(config["hidden_size"])
        self._lower = config["do_lower_case"]  # sentence-transformers lowercases before tokenizing
        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.enable_truncation(self._max_len)
        self._tokenizer.no_padding()
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
        lengths = [len(e.ids) for e in encodings]
        chunks = self.passes(lengths)
        ids = [[encodings[i].ids for i in chunk] for chunk in chunks]
        if len(chunks) == 1 and not self._nice:
            out[chunks[0]] = self._forward(ids[0])
            return out
        for chunk, vectors in zip(chunks, self._pool.map(self._forward, ids), strict=True):
            out[chunk] = vectors
        return out

    def passes(self, lengths: Sequence[int]) -> list[list[int]]:
        """The passes for texts of these token lengths, as lists of text positions.

        Longest first, so each pass pads little. A pass holds at most ``batch_size`` texts
        and ``pass_tokens`` padded tokens (its first text is its longest). A batch is split
        so that every worker gets a share, but not below _MIN_CHUNK texts a pass (smaller
        passes cost more CPU per text; under load the micro-batcher keeps the other workers
        busy with other batches)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        cap = min(self._batch_size, max(_MIN_CHUNK, -(-len(order) // self._workers)))
        chunks, start = [], 0
        while start < len(order):
            size = cap
            if self._pass_tokens > 0:
                size = min(size, max(1, self._pass_tokens // lengths[order[start]]))
            chunks.append(order[start : start + size])
            start += size
        return chunks

    def _forward(self, ids: list[list[int]]) -> npt.NDArray[np.float32]:
        # Padded with numpy, then one call into the engine: the GIL is released once per
        # batch, not once per op (see bert_graph).
        lengths = np.array([len(row) for row in ids])
        tokens = np.zeros((len(ids), int(lengths.max())), dtype=np.int64)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = seq
        mask = np.arange(tokens.shape[1]) < lengths[:, None]
        with self._slots:
            return self._forward_pass(tokens, mask)


def _lower_priority(nice: int) -> None:
    """Lower the CPU priority of the calling thread by ``nice`` (Linux: priority is per thread)."""
    if nice <= 0:
        return
    if not sys.platform.startswith("linux"):  # elsewhere a thread id is no process id: never pass one
        log.warning("embedding.nice_unavailable", nice=nice, error=f"not on Linux ({sys.platform})")
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # e.g. a sandbox that forbids it: the thread keeps its priority
        log.warning("embedding.nice_unavailable", nice=nice, error=str(exc))


def load_embedder(
    model_path: Path | None = None,
    *,
    batch_size: int = 64,
    threads: int = 0,
    runtime: Literal["onnx", "torch"] = "onnx",
    onnx_cache_dir: Path | None = None,
    pass_tokens: int = PASS_TOKENS,
    nice: int = 0,
) -> BertEmbedder | SentenceTransformerEmbedder:
    """The fastest embedder that computes the model's own vectors: :class:`BertEmbedder` for a
    BERT mean-pooling model (the packaged default), else sentence-transformers."""
    # Never reach for a model hub: the weights are local or start-up fails.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = model_path or packaged_model_path()
    if bert_layout(path) is not None:
        return BertEmbedder(
            path,
            batch_size=batch_size,
            threads=threads,
            runtime=runtime,
            onnx_cache_dir=onnx_cache_dir,
            pass_tokens=pass_tokens,
            nice=nice,
        )
    return SentenceTransformerEmbedder(path, batch_size=batch_size, threads=threads)
