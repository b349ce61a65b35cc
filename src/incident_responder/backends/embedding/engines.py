"""What runs a BERT forward pass for :class:`~.bert.BertEmbedder`: ONNX Runtime (default)
or torch. Both take a padded batch (token ids, mask; numpy) and give unit vectors.

ONNX Runtime runs the graph :mod:`.bert_graph` defines, exported once with
``torch.onnx.export`` (opset 17) from the packaged weights into a cache directory (``make
setup`` does it via ``incident-responder prepare-model``; a server that finds no export
makes it at start). ONNX Runtime costs less CPU per text than torch at every batch size,
its vectors match torch's to cosine >= 0.99999, and with an export cached start-up does not
import torch at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from incident_responder.errors import ConfigError

log = structlog.get_logger(__name__)

# (token ids int64 [batch, width], mask bool [batch, width]) -> unit vectors float32 [batch, dim]
Forward = Callable[[npt.NDArray[np.int64], npt.NDArray[np.bool_]], npt.NDArray[np.float32]]

OPSET = 17
# Bump when bert_graph changes what it computes: cached exports of the old graph are then ignored.
_GRAPH_VERSION = 1
_WEIGHTS = "model.safetensors"


def default_cache_dir() -> Path:
    """The cache of exports when no settings say where (``Settings.onnx_cache_dir`` does)."""
    return Path.home() / ".cache" / "incident-responder" / "onnx"


def _architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "layers": int(config["num_hidden_layers"]),
        "heads": int(config["num_attention_heads"]),
        "dim": int(config["hidden_size"]),
        "eps": float(config["layer_norm_eps"]),
    }


def _load_weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights = load_file(str(path / _WEIGHTS))
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    return {k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)}


def _torch() -> ModuleType:
    """torch, or a ConfigError saying what to do on a serving install (ONNX Runtime only)."""
    try:
        import torch
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the embedding model has no ONNX export here and torch is not installed to make one: "
            "set IR_EMBEDDING__ONNX_CACHE_DIR to where `incident-responder prepare-model` wrote one, "
            "or pip install torch==2.13.0 (the CPU build)"
        ) from exc
    return torch


def torch_engine(path: Path, config: Mapping[str, Any]) -> Forward:
    """The forward pass as one frozen TorchScript graph on torch (one thread per pass)."""
    torch = _torch()

    from incident_responder.backends.embedding.bert_graph import scripted_encoder

    # Single-threaded passes side by side, not one pass on torch's intra-op pool: a pass on
    # two threads costs more CPU per text, and its threads wait for each other whenever the
    # server's other threads hold a core. Process-wide, like every torch thread setting.
    torch.set_num_threads(1)
    encoder = scripted_encoder(_load_weights(path), **_architecture(config))

    def forward(tokens: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        with torch.no_grad():
            vectors: npt.NDArray[np.float32] = encoder(
                torch.from_numpy(tokens), torch.from_numpy(mask)
            ).numpy()
        return vectors

    return forward


def export_name(path: Path, config: Mapping[str, Any]) -> str:
    """The cache file name of a model's export: a digest of its weights, its architecture,
    the graph version and the opset (so an edited model or graph is exported anew)."""
    digest = hashlib.sha256()
    with (path / _WEIGHTS).open("rb") as fh:
        digest.update(hashlib.file_digest(fh, "sha256").digest())
    digest.update(json.dumps([_architecture(config), _GRAPH_VERSION, OPSET], sort_keys=True).encode())
    return f"bert-{digest.hexdigest()[:24]}-opset{OPSET}.onnx"


def export_onnx(path: Path, config: Mapping[str, Any], target: Path) -> None:
    """Export the graph of :mod:`.bert_graph` with ``path``'s weights to ``target``
    (written to a temp file and renamed: a crash never leaves half a model there)."""
    torch = _torch()

    from incident_responder.backends.embedding.bert_graph import Encoder

    encoder = Encoder(_load_weights(path), **_architecture(config)).eval()
    example = (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.bool))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates the TorchScript-based exporter for the dynamo one, which
            # needs onnxscript; this one gives the same graph and torch is pinned.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                encoder,
                example,
                tmp,
                opset_version=OPSET,
                input_names=["tokens", "mask"],
                output_names=["vectors"],
                dynamic_axes={"tokens": {0: "batch", 1: "width"}, "mask": {0: "batch", 1: "width"}},
                dynamo=False,
            )
        # mkstemp makes it owner-only; a model is read by whatever user serves it (an image
        # exports as root and serves as another user)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _session(model: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One thread per pass, as on torch: BertEmbedder runs one pass per core side by side.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def onnx_engine(path: Path, config: Mapping[str, Any], cache_dir: Path) -> Forward:
    """The forward pass on ONNX Runtime, from the cached export (made now if missing;
    remade once if the cached file does not load)."""
    target = cache_dir / export_name(path, config)
    try:
        if not target.is_file():
            log.info("embedding.onnx_export", path=str(target))
            export_onnx(path, config, target)
        try:
            session = _session(target)
        except Exception as exc:  # a damaged file (the export itself is written atomically)
            log.warning("embedding.onnx_reexport", path=str(target), error=str(exc))
            export_onnx(path, config, target)
            session = _session(target)
    except OSError as exc:
        raise ConfigError(f"cannot write the ONNX export to {cache_dir}: {exc.strerror or exc}") from exc

    def forward(tokens: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
        vectors: npt.NDArray[np.float32] = session.run(None, {"tokens": tokens, "mask": mask})[0]
        return vectors

    return forward
