"""A grounded recommender on any OpenAI Chat Completions endpoint (the official ``openai`` SDK).

Works with OpenAI, Azure OpenAI (v1 endpoint), Ollama, vLLM and llama.cpp through ``base_url``.

The model sees the incident log (untrusted, delimited, truncated) and the retrieved runbook
chunks (each labelled with its runbook id and heading) and must answer strict JSON. The answer is
validated item by item: a step that cites a runbook the model was not shown is dropped, and a
reply with no usable step is a ``BackendError``. Steps end with ``[runbook: <id>]`` like the
offline recommender's, so the two are interchangeable (see ``fallback.FallbackRecommender``).
"""

from incident_responder.backends.recommenders.openai_chat.client import make_openai_client
from incident_responder.backends.recommenders.openai_chat.prompt import SYSTEM_PROMPT, USER_PROMPT
from incident_responder.backends.recommenders.openai_chat.recommender import OpenAIChatRecommender
from incident_responder.backends.recommenders.openai_chat.usage import TokenUsage

__all__ = ["SYSTEM_PROMPT", "USER_PROMPT", "OpenAIChatRecommender", "TokenUsage", "make_openai_client"]
