"""The BERT embedder (on ONNX Runtime by default, or on torch) computes what
sentence-transformers computes for the packaged model, and anything it does not recognise
goes to sentence-transformers."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from incident_responder.backends.embedding.bert import BertEmbedder, bert_layout, load_embedder
from incident_responder.backends.embedding.engines import export_name
from incident_responder.backends.embedding.sentence_transformer import (
    SentenceTransformerEmbedder,
    packaged_model_path,
)
from incident_responder.errors import ConfigError
from incident_responder.ports import Embedder

TEXTS = [
    "payment-api: upstream connect error or disconnect/reset before headers, reset reason: overflow",
    "disk /var/lib/postgresql is 97% full on db-<num>",
    "OOMKilled: container checkout exceeded memory limit <num>Mi",
    "TLS handshake timeout talking to vault.internal:<num>",
    "",
    "x",
    "ÉRREUR: la base de données ne répond plus — délai dépassé",
    "認証サーバーに接続できません (timeout)",
    "kafka consumer group orders lag " + "partition <num> offset <num> " * 80,  # > 256 tokens: truncated
    "\t  leading and trailing whitespace \n\n",
]


@pytest.fixture(scope="module")
def reference() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


def test_the_packaged_model_runs_on_onnx_runtime_by_default(embedder: Embedder) -> None:
    assert isinstance(embedder, BertEmbedder)
    assert embedder.runtime == "onnx"
    assert embedder.dim == 384


@pytest.fixture(scope="module")
def on_torch() -> BertEmbedder:
    return BertEmbedder(runtime="torch")


def test_the_torch_runtime_computes_the_same_vectors(
    on_torch: BertEmbedder, embedder: Embedder, reference: SentenceTransformerEmbedder
) -> None:
    assert on_torch.runtime == "torch"
    ours, theirs = on_torch.embed(TEXTS), reference.embed(TEXTS)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    assert (ours * embedder.embed(TEXTS)).sum(axis=1).min() >= 0.9999


def test_vectors_match_sentence_transformers(
    embedder: Embedder, reference: SentenceTransformerEmbedder
) -> None:
    ours, theirs = embedder.embed(TEXTS), reference.embed(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.9999, dict(zip(TEXTS, cosines.round(6), strict=True))


def test_a_text_gets_the_same_vector_alone_or_in_any_batch(embedder: Embedder) -> None:
    batched = embedder.embed(TEXTS)
    alone = np.stack([embedder.embed([t])[0] for t in TEXTS])
    shuffled = embedder.embed(TEXTS[::-1])[::-1]
    assert np.allclose(batched, alone, atol=1e-5) and np.allclose(batched, shuffled, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_truncation_at_max_seq_length(embedder: Embedder) -> None:
    head = "kafka consumer group orders lag " + "partition <num> offset <num> " * 80
    a, b = embedder.embed([head, head + " and then a completely different ending about dns"])
    assert (
        float(np.dot(a, b)) > 0.99999
    )  # the ending is past 256 tokens: cut off, as sentence-transformers does


def _copy_model(tmp_path: Path) -> Path:
    src = packaged_model_path()
    dst = tmp_path / "model"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors"))
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    return dst


def test_a_model_with_another_pooling_goes_to_sentence_transformers(
    tmp_path: Path, embedder: Embedder
) -> None:
    path = _copy_model(tmp_path)
    pooling = path / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    assert bert_layout(path) is None
    with pytest.raises(ConfigError, match="mean pooling"):
        BertEmbedder(path)
    fallback = load_embedder(path)
    assert isinstance(fallback, SentenceTransformerEmbedder)
    cls_vectors, mean_vectors = fallback.embed(TEXTS[:4]), embedder.embed(TEXTS[:4])
    assert (cls_vectors * mean_vectors).sum(axis=1).min() < 0.99  # it pooled the [CLS] token, as configured


def test_a_copy_of_the_packaged_layout_is_recognised(tmp_path: Path, embedder: Embedder) -> None:
    path = _copy_model(tmp_path)
    layout = bert_layout(path)
    assert layout is not None and layout["max_seq_length"] == 256
    copy = load_embedder(path, batch_size=3)
    assert isinstance(copy, BertEmbedder)
    assert np.allclose(copy.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)


def test_an_unreadable_model_dir_is_not_bert(tmp_path: Path) -> None:
    assert bert_layout(tmp_path) is None
    (tmp_path / "modules.json").write_text("not json")
    assert bert_layout(tmp_path) is None


@pytest.mark.parametrize("lower", [True, False])
def test_do_lower_case_is_honoured(tmp_path: Path, embedder: Embedder, lower: bool) -> None:
    # A copy whose tokenizer keeps case: only do_lower_case decides what the model sees.
    path = _copy_model(tmp_path)
    tokenizer = json.loads((path / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (path / "tokenizer.json").write_text(json.dumps(tokenizer))
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": lower})
    )
    cased = BertEmbedder(path)
    text = "Disk FULL on DB-Primary: Postgres Refuses Writes"
    (ours,) = cased.embed([text])
    (uncased,) = embedder.embed([text.lower()])
    similarity = float(np.dot(ours, uncased))
    assert similarity > 0.99999 if lower else similarity < 0.999


def test_batches_split_across_workers_and_concurrent_callers_get_their_own_vectors(
    tmp_path: Path, embedder: Embedder
) -> None:
    # Three single-threaded workers, chunks of at most 2: one call runs several passes at
    # once, and calls from several threads share the workers without mixing up results.
    three = BertEmbedder(_copy_model(tmp_path), batch_size=2, threads=3)
    expected = embedder.embed(TEXTS)
    assert np.allclose(three.embed(TEXTS), expected, atol=1e-5)
    rotations = [TEXTS[i:] + TEXTS[:i] for i in range(len(TEXTS))]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(three.embed, rotations))
    for i, got in enumerate(results):
        assert np.allclose(got, np.roll(expected, -i, axis=0), atol=1e-5)


def test_the_onnx_export_is_made_once_and_reused(tmp_path: Path, embedder: Embedder) -> None:
    cache = tmp_path / "onnx"
    first = BertEmbedder(runtime="onnx", onnx_cache_dir=cache)
    (export,) = cache.glob("*.onnx")
    made = export.stat().st_mtime_ns
    second = BertEmbedder(runtime="onnx", onnx_cache_dir=cache)
    assert [p.name for p in cache.iterdir()] == [export.name]  # no temp file left behind
    assert export.stat().st_mtime_ns == made
    for model in (first, second):
        assert model.runtime == "onnx"
        assert np.allclose(model.embed(TEXTS), embedder.embed(TEXTS), atol=1e-5)


def test_a_damaged_export_is_made_again(tmp_path: Path, embedder: Embedder) -> None:
    cache = tmp_path / "onnx"
    path = packaged_model_path()
    layout = bert_layout(path)
    assert layout is not None
    cache.mkdir()
    (cache / export_name(path, layout)).write_bytes(b"not an onnx model")
    model = BertEmbedder(runtime="onnx", onnx_cache_dir=cache)
    assert model.runtime == "onnx"
    assert (cache / export_name(path, layout)).stat().st_size > 1_000_000
    assert np.allclose(model.embed(TEXTS[:3]), embedder.embed(TEXTS[:3]), atol=1e-5)


def test_without_a_writable_cache_the_model_runs_on_torch(tmp_path: Path, embedder: Embedder) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with capture_logs() as events:
        model = BertEmbedder(runtime="onnx", onnx_cache_dir=blocker / "onnx")
    assert model.runtime == "torch"
    (warning,) = [e for e in events if e["event"] == "embedding.onnx_unavailable"]
    assert warning["fallback"] == "torch" and "a-file" in warning["error"]
    assert np.allclose(model.embed(TEXTS[:3]), embedder.embed(TEXTS[:3]), atol=1e-5)


def test_the_export_name_follows_the_weights_and_the_architecture(tmp_path: Path) -> None:
    layout = {"num_hidden_layers": 6, "num_attention_heads": 12, "hidden_size": 384, "layer_norm_eps": 1e-12}
    (tmp_path / "model.safetensors").write_bytes(b"weights v1")
    name = export_name(tmp_path, layout)
    assert name.endswith("-opset17.onnx") and export_name(tmp_path, dict(layout)) == name
    assert export_name(tmp_path, {**layout, "num_hidden_layers": 12}) != name
    (tmp_path / "model.safetensors").write_bytes(b"weights v2")
    assert export_name(tmp_path, layout) != name


def test_passes_hold_the_longest_texts_first_within_the_token_and_text_limits(tmp_path: Path) -> None:
    model = BertEmbedder(_copy_model(tmp_path), batch_size=8, threads=2, pass_tokens=100)
    lengths = [30, 5, 12, 250, 12, 40, 7, 9, 11, 10, 8, 6, 5, 30, 20, 3, 4, 5, 6, 7, 9]
    passes = model.passes(lengths)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))  # each text once
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(lengths, reverse=True)  # longest first: each pass pads little
    assert passes[0] == [3]  # longer than the budget: a pass of its own
    for p in passes[1:]:
        assert len(p) <= 8 and len(p) * lengths[p[0]] <= 100
    assert [len(p) for p in passes] == [1, 2, 3, 8, 7]  # 250 | 40 30 | 30 20 12 | 12..7 | 6..3
    # Without a token limit only the text limit (and the split across workers) applies.
    unlimited = BertEmbedder(_copy_model(tmp_path / "b"), batch_size=8, threads=2, pass_tokens=0)
    assert [len(p) for p in unlimited.passes(lengths)] == [8, 8, 5]


def test_a_small_token_budget_changes_the_passes_not_the_vectors(tmp_path: Path, embedder: Embedder) -> None:
    # 24 tokens a pass: the long texts run alone, the short ones a few at a time, on 2 workers.
    small = BertEmbedder(_copy_model(tmp_path), pass_tokens=24, threads=2)
    assert np.allclose(small.embed(TEXTS * 3), embedder.embed(TEXTS * 3), atol=1e-5)


def test_the_settings_default_token_budget_is_the_embedders() -> None:
    from incident_responder.backends.embedding.bert import PASS_TOKENS
    from incident_responder.settings import EmbeddingSettings

    assert EmbeddingSettings().pass_tokens == PASS_TOKENS == 512


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_a_niced_embedder_runs_every_pass_on_its_own_lower_priority_threads(
    tmp_path: Path, embedder: Embedder
) -> None:
    here = threading.get_native_id()
    before = os.getpriority(os.PRIO_PROCESS, here)
    niced = BertEmbedder(_copy_model(tmp_path), nice=7, threads=2)
    # a lone text is one pass: it too runs on the pool, never in the (unniced) caller
    assert np.allclose(niced.embed(TEXTS[:1]), embedder.embed(TEXTS[:1]), atol=1e-5)
    assert niced._pool._threads, "the lone pass ran on the embedder's threads"
    assert np.allclose(niced.embed(TEXTS * 6), embedder.embed(TEXTS * 6), atol=1e-5)
    workers = list(niced._pool._threads)
    assert {os.getpriority(os.PRIO_PROCESS, t.native_id) for t in workers} == {min(19, before + 7)}  # type: ignore[arg-type]
    assert os.getpriority(os.PRIO_PROCESS, here) == before


def test_nice_is_refused_outside_0_to_19_and_defaults_to_10_in_the_settings(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from incident_responder.settings import EmbeddingSettings

    with pytest.raises(ConfigError):
        BertEmbedder(_copy_model(tmp_path), nice=20)
    assert EmbeddingSettings().nice == 10
    with pytest.raises(ValidationError):
        EmbeddingSettings(nice=-1)


def _priority_after(nice: int) -> tuple[int, int]:
    """The priority of a new thread before and after ``_lower_priority(nice)`` in it."""
    from incident_responder.backends.embedding.bert import _lower_priority

    seen: list[int] = []

    def run() -> None:
        tid = threading.get_native_id()
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))
        _lower_priority(nice)
        seen.append(os.getpriority(os.PRIO_PROCESS, tid))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0], seen[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads per-thread priority (Linux)")
def test_a_priority_that_cannot_be_lowered_is_a_warning_not_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as patch, capture_logs() as logs:
        patch.setattr(os, "setpriority", refused)  # as a sandbox that forbids it would
        before, after = _priority_after(5)
    assert before == after
    with monkeypatch.context() as patch, capture_logs() as more:
        patch.setattr(sys, "platform", "darwin")  # there a thread id is no process id: never passed
        before, after = _priority_after(5)
    assert before == after
    assert [e["event"] for e in logs + more] == ["embedding.nice_unavailable"] * 2
    assert "not on Linux" in more[0]["error"]
