"""Cancelling a batch through the SDK."""

from helpers import create


def test_given_a_validating_batch_when_cancelled_then_it_is_cancelling_with_a_timestamp(server):
    client = server.client()
    batch = create(client)

    cancelled = client.batches.cancel(batch.id)

    assert batch.status == "validating"
    assert cancelled.id == batch.id
    assert cancelled.status == "cancelling"
    assert isinstance(cancelled.cancelling_at, int)
    assert cancelled.cancelling_at >= batch.created_at
    assert client.batches.retrieve(batch.id).model_dump() == cancelled.model_dump()


def test_given_a_cancelling_batch_when_cancelled_again_then_the_same_batch_is_returned(server):
    client = server.client()
    batch = create(client)
    first = client.batches.cancel(batch.id)

    again_raw = client.batches.with_raw_response.cancel(batch.id)

    assert again_raw.http_response.status_code == 200
    assert again_raw.parse().model_dump() == first.model_dump()
