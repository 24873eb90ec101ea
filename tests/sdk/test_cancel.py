"""Cancelling a batch through the SDK."""

from helpers import create, upload_input, wait_for_status


def test_given_a_running_batch_when_cancelled_then_it_is_cancelling_then_cancelled(slow_server):
    client = slow_server.client()
    batch = create(client, input_file_id=upload_input(client))

    cancelled = client.batches.cancel(batch.id)

    assert batch.status == "validating"
    assert cancelled.id == batch.id
    assert cancelled.status == "cancelling"
    assert isinstance(cancelled.cancelling_at, int)
    assert cancelled.cancelling_at >= batch.created_at
    done = wait_for_status(client, batch.id, {"cancelled"})
    assert done.cancelling_at == cancelled.cancelling_at
    assert isinstance(done.cancelled_at, int) and done.cancelled_at >= done.cancelling_at


def test_given_a_cancelled_batch_when_cancelled_again_then_it_is_returned_unchanged(slow_server):
    client = slow_server.client()
    batch = create(client, input_file_id=upload_input(client))
    client.batches.cancel(batch.id)
    done = wait_for_status(client, batch.id, {"cancelled"})

    again_raw = client.batches.with_raw_response.cancel(batch.id)

    assert again_raw.http_response.status_code == 200
    assert again_raw.parse().model_dump() == done.model_dump()


def test_given_a_failed_batch_when_cancelled_then_409(server):
    import openai
    import pytest

    client = server.client()
    batch = create(client, input_file_id="file-does-not-exist")
    wait_for_status(client, batch.id, {"failed"})

    with pytest.raises(openai.ConflictError) as error:
        client.batches.cancel(batch.id)

    assert "Cannot cancel batch" in error.value.message
