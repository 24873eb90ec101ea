"""Tenants and API keys: one tenant can neither see nor touch another's batches."""

import openai
import pytest

from helpers import create, unique_key


def test_given_two_tenants_when_both_use_the_same_key_then_each_gets_its_own_batch(server):
    key = unique_key()

    batch_a = create(server.client("key-a"), input_file_id="file-a", extra_body={"idempotency_key": key})
    # Different parameters on purpose: were the key shared across tenants, this
    # would be a 409 conflict instead of a new batch.
    batch_b = create(server.client("key-b"), input_file_id="file-b", extra_body={"idempotency_key": key})

    assert batch_b.id != batch_a.id
    assert batch_b.input_file_id == "file-b"
    assert server.client("key-a").batches.retrieve(batch_a.id).input_file_id == "file-a"


def test_given_a_batch_of_tenant_a_when_tenant_b_retrieves_or_cancels_it_then_it_is_not_found(server):
    batch_a = create(server.client("key-a"))
    client_b = server.client("key-b")

    with pytest.raises(openai.NotFoundError):
        client_b.batches.retrieve(batch_a.id)
    with pytest.raises(openai.NotFoundError):
        client_b.batches.cancel(batch_a.id)

    # tenant-b's cancel changed nothing (the worker may have moved it on meanwhile).
    assert server.client("key-a").batches.retrieve(batch_a.id).cancelling_at is None


def test_given_batches_of_both_tenants_when_tenant_b_lists_then_only_its_own_are_listed(server):
    batch_a = create(server.client("key-a"))
    batch_b = create(server.client("key-b"))

    listed_b = {batch.id for batch in server.client("key-b").batches.list(limit=100)}
    listed_a = {batch.id for batch in server.client("key-a").batches.list(limit=100)}

    assert batch_b.id in listed_b
    assert batch_a.id not in listed_b
    assert batch_a.id in listed_a
    assert not listed_a & listed_b


def test_given_an_unknown_api_key_when_calling_then_authentication_fails(server):
    client = server.client("not-a-key")

    with pytest.raises(openai.AuthenticationError) as error:
        create(client)
    with pytest.raises(openai.AuthenticationError):
        client.batches.list()

    assert error.value.status_code == 401
