"""Search terms: identifiers split into words, stop words dropped, light stemming."""

from __future__ import annotations

from incident_responder.text.terms import split_identifier, tokenize


def test_tokenize_splits_camel_snake_and_kebab_case_and_keeps_joined_forms() -> None:
    assert split_identifier("KubeAPIDown") == ["Kube", "API", "Down"]
    tokens = tokenize("KubeAPIDown kube_pod-crash")
    assert {"kube", "api", "down", "kubeapidown", "kubeapi", "pod", "crash", "kubepodcrash"} <= set(tokens)
    assert tokenize("the failing consumers") == tokenize("failed consumer")  # stopwords + light stemming
