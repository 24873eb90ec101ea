"""The validation stage through the SDK: a created batch is checked against its
input file and ends `in_progress` (ready to execute) or `failed` (every error)."""

import json

from helpers import chat_line, create, upload_input, wait_for_status


def test_given_a_valid_input_file_when_a_batch_is_created_then_it_runs_to_completion(server):
    client = server.client()
    file_id = upload_input(client, [chat_line("a"), chat_line("b"), chat_line("c")])

    batch = create(client, input_file_id=file_id)

    done = wait_for_status(client, batch.id, {"completed"})
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    assert done.model == "fake-model"
    assert isinstance(done.in_progress_at, int) and done.in_progress_at >= batch.created_at
    assert done.errors is None


def test_given_a_nonexistent_file_when_a_batch_is_created_then_it_fails_with_cannot_find_file(server):
    client = server.client()

    batch = create(client, input_file_id="file-nonexistent")

    failed = wait_for_status(client, batch.id, {"failed"})
    assert isinstance(failed.failed_at, int)
    assert len(failed.errors.data) == 1
    error = failed.errors.data[0]
    assert error.code == "invalid_request"
    assert "cannot find file" in error.message.lower()
    assert error.param == "input_file_id"


def test_given_invalid_request_lines_when_a_batch_is_created_then_it_fails_listing_each(server):
    client = server.client()
    streaming = json.dumps({"custom_id": "s", "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": "fake-model", "messages": [], "stream": True}})
    wrong_url = json.dumps({"custom_id": "u", "method": "POST", "url": "/v1/embeddings",
                            "body": {"model": "fake-model", "messages": []}})
    unknown_model = chat_line("m", model="nonexistent-model-xyz")
    file_id = upload_input(client, [chat_line("ok"), streaming, wrong_url, unknown_model])

    batch = create(client, input_file_id=file_id)

    failed = wait_for_status(client, batch.id, {"failed"})
    found = [(e.code, e.line, e.param) for e in failed.errors.data]
    assert found == [
        ("streaming_unsupported", 2, "body.stream"),
        ("invalid_url", 3, "url"),
        ("model_not_found", 4, "body.model"),
    ]


def test_given_a_file_whose_line_3_is_broken_then_the_upload_succeeds_and_the_batch_fails_at_line_3(server):
    # OpenAI's behaviour: the upload takes the file, the batch names the line.
    client = server.client()
    file_id = upload_input(client, [chat_line("a"), chat_line("b"), "{invalid json here", chat_line("c")])

    batch = create(client, input_file_id=file_id)

    failed = wait_for_status(client, batch.id, {"failed"})
    assert len(failed.errors.data) == 1
    error = failed.errors.data[0]
    assert (error.code, error.line, error.param) == ("invalid_json_line", 3, None)
    assert error.message == "This line is not parseable as valid JSON."


def test_given_a_batch_cancelled_early_then_it_ends_cancelled(slow_server):
    client = slow_server.client()
    batch = create(client, input_file_id=upload_input(client))

    client.batches.cancel(batch.id)

    cancelled = wait_for_status(client, batch.id, {"cancelled"})
    assert isinstance(cancelled.cancelled_at, int)
