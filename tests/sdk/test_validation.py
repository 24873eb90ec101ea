"""Invalid requests: the SDK raises the typed error, and its text names the problem."""

import openai
import pytest

from helpers import create


@pytest.mark.parametrize("window", ["1h", "48h", ""])
def test_given_an_unsupported_completion_window_when_creating_then_it_is_a_bad_request(server, window):
    with pytest.raises(openai.BadRequestError) as error:
        create(server.client(), completion_window=window)

    assert "completion_window" in str(error.value)
    assert error.value.param == "completion_window"


def test_given_an_unknown_endpoint_when_creating_then_it_is_a_bad_request_naming_endpoint(server):
    with pytest.raises(openai.BadRequestError) as error:
        create(server.client(), endpoint="/v1/invalid/endpoint")

    # openai 3.x puts only the message in str(error); code and param are attributes.
    assert error.value.code == "invalid_value"
    assert error.value.param == "endpoint"
    assert "/v1/invalid/endpoint" in str(error.value)


def test_given_a_non_string_metadata_value_when_creating_then_it_is_a_bad_request_naming_the_key(server):
    with pytest.raises(openai.BadRequestError) as error:
        create(server.client(), metadata={"tags": ["a", "b"]})

    assert "tags" in str(error.value)
    assert error.value.param == "metadata.tags"


def test_given_an_unknown_id_when_retrieving_then_it_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as error:
        server.client().batches.retrieve("batch_does_not_exist")

    assert "not found" in str(error.value)


def test_given_an_unknown_id_when_cancelling_then_it_is_not_found(server):
    with pytest.raises(openai.NotFoundError) as error:
        server.client().batches.cancel("batch_does_not_exist")

    assert "not found" in str(error.value)
