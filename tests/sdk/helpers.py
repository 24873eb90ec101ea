"""Small helpers shared by the SDK tests."""

import uuid

import openai
from openai.types import Batch

# A valid create request; tests override the field they are about.
BATCH = {
    "input_file_id": "file-sdk-input",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
}


def unique_key(label: str = "key") -> str:
    """An idempotency key no other test (or earlier run on the same store) uses."""
    return f"sdk-{label}-{uuid.uuid4().hex}"


def create(client: openai.OpenAI, **overrides) -> Batch:
    return client.batches.create(**{**BATCH, **overrides})
