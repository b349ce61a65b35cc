"""Embeddings remembered per tenant: one tenant's texts never answer another's lookups."""

from __future__ import annotations

import numpy as np

from incident_responder.lru import LruCache
from incident_responder.pipeline.tenant_vectors import TenantVectors


def test_tenant_vectors_answer_each_tenant_from_its_own_texts_only() -> None:
    lookups: list[bool] = []
    vectors = TenantVectors(LruCache(100, on_lookup=lookups.append))
    x = np.ones(4, dtype=np.float32)
    vectors.remember("acme", {"x": x})
    assert vectors.known("acme", ["x", "y", "x"]).keys() == {"x"}  # each distinct text looked up once
    assert lookups == [True, False]
    assert vectors.known("globex", ["x"]) == {}  # another tenant's text is a miss
    assert lookups[-1] is False
