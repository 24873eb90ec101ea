"""Small helpers shared by the SDK tests."""

import json
import time
import uuid

import openai
from openai.types import Batch

# A valid create request; tests override the field they are about.
BATCH = {
    "input_file_id": "file-sdk-input",
    "endpoint": "/v1/chat/completions",
    "completion_window": "24h",
}


# The inline content limit of the `files_server` fixture: content above it is
# answered with a redirect to a presigned S3 URL on the moto backend.
FILES_INLINE_CONTENT_MAX_BYTES = 1024 * 1024


def unique_key(label: str = "key") -> str:
    """An idempotency key no other test (or earlier run on the same store) uses."""
    return f"sdk-{label}-{uuid.uuid4().hex}"


def create(client: openai.OpenAI, **overrides) -> Batch:
    return client.batches.create(**{**BATCH, **overrides})


def chat_line(custom_id: str, model: str = "fake-model") -> str:
    return json.dumps({
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"hello {custom_id}"}]},
    })


def upload_input(client: openai.OpenAI, lines: list[str] | None = None, purpose: str = "batch") -> str:
    """Uploads a JSONL input file (two valid chat lines by default); returns its id."""
    content = "\n".join(lines if lines is not None else [chat_line("a"), chat_line("b")]) + "\n"
    return client.files.create(file=("input.jsonl", content.encode()), purpose=purpose).id


# Statuses no work follows.
TERMINAL = {"failed", "completed", "expired", "cancelled"}


def wait_for_status(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout_s: float = 30) -> Batch:
    """Polls until the batch is in one of `statuses`; the bound only guards a hang."""
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert batch.status not in TERMINAL, f"{batch_id} ended {batch.status}, not {statuses}: {batch}"
        assert time.monotonic() < deadline, f"{batch_id} still {batch.status} after {timeout_s} s"
        time.sleep(0.05)


def stable_fields(batch: Batch) -> dict:
    """What a replay must return unchanged, whatever the worker did meanwhile."""
    return {k: getattr(batch, k) for k in (
        "id", "created_at", "endpoint", "input_file_id", "completion_window", "metadata", "expires_at")}
