"""Idempotent creates, as the official SDK sends them.

A client that retries a create after a timeout must get the batch it already
created, never a second one; a key reused for a different request must be refused
in a way the SDK does not retry.
"""

import openai
import pytest

from helpers import BATCH, create, stable_fields, unique_key

REPLAYED = "idempotent-replayed"


def test_given_a_body_key_when_the_create_is_retried_with_metadata_reordered_then_the_first_batch_is_replayed(
    server,
):
    client = server.client()
    key = unique_key()

    first_raw = client.batches.with_raw_response.create(
        **BATCH,
        metadata={"team": "search", "run": "7"},
        extra_body={"idempotency_key": key},
    )
    retry_raw = client.batches.with_raw_response.create(
        **BATCH,
        metadata={"run": "7", "team": "search"},
        extra_body={"idempotency_key": key},
    )

    first, retry = first_raw.parse(), retry_raw.parse()
    assert REPLAYED not in first_raw.headers
    assert retry_raw.headers.get(REPLAYED) == "true"
    assert retry.id == first.id
    assert retry.created_at == first.created_at
    assert stable_fields(retry) == stable_fields(first)
    assert retry.metadata == {"team": "search", "run": "7"}


def test_given_an_idempotency_key_header_when_the_create_is_retried_then_the_first_batch_is_replayed(
    server,
):
    client = server.client()
    key = unique_key()

    first = create(client, extra_headers={"Idempotency-Key": key})
    retry_raw = client.batches.with_raw_response.create(
        **BATCH, extra_headers={"Idempotency-Key": key}
    )

    assert retry_raw.headers.get(REPLAYED) == "true"
    assert stable_fields(retry_raw.parse()) == stable_fields(first)


def test_given_the_same_key_in_header_and_body_when_creating_then_it_is_one_key(server):
    client = server.client()
    key = unique_key()

    first = create(client, extra_body={"idempotency_key": key})
    both = create(client, extra_headers={"Idempotency-Key": key}, extra_body={"idempotency_key": key})
    header_only = create(client, extra_headers={"Idempotency-Key": key})

    assert both.id == first.id
    assert header_only.id == first.id
    assert header_only.created_at == first.created_at


def test_given_different_keys_in_header_and_body_when_creating_then_it_is_a_bad_request(server):
    client = server.client()

    with pytest.raises(openai.BadRequestError) as error:
        create(
            client,
            extra_headers={"Idempotency-Key": unique_key("header")},
            extra_body={"idempotency_key": unique_key("body")},
        )

    assert error.value.status_code == 400
    assert "idempotency_key" in str(error.value)


def test_given_a_used_key_when_reused_with_another_input_file_then_409_is_returned_once_and_not_retried(
    server,
):
    key = unique_key()
    original = create(server.client(), extra_body={"idempotency_key": key})
    sent = []

    def count_request(request):
        sent.append(f"{request.method} {request.url.path}")

    # The SDK retries a 409 up to max_retries times unless the server says
    # `x-should-retry: false`; counting what goes over the wire shows which it did.
    # DefaultHttpxClient is the SDK's own HTTP client class (httpx2.Client in
    # openai 3.x), so this works whichever HTTP library the SDK is built on.
    counting = openai.DefaultHttpxClient(event_hooks={"request": [count_request]})
    client = server.client(max_retries=2, http_client=counting)

    with pytest.raises(openai.ConflictError) as error:
        create(client, input_file_id="file-sdk-other", extra_body={"idempotency_key": key})

    assert error.value.status_code == 409
    assert "was previously used with different parameters" in error.value.message
    assert sent == ["POST /v1/batches"]
    assert stable_fields(server.client().batches.retrieve(original.id)) == stable_fields(original)


def test_given_no_key_when_creating_twice_then_two_batches_are_created(server):
    client = server.client()

    first_raw = client.batches.with_raw_response.create(**BATCH)
    second_raw = client.batches.with_raw_response.create(**BATCH)

    first, second = first_raw.parse(), second_raw.parse()
    assert first.id != second.id
    assert REPLAYED not in second_raw.headers
    assert client.batches.retrieve(first.id).id == first.id
    assert client.batches.retrieve(second.id).id == second.id
