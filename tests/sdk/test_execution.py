"""Batches run end to end through the official SDK, against the fake upstream."""

import json

from helpers import chat_line, create, upload_input, wait_for_status


def _lines(client, file_id):
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_given_a_chat_batch_with_a_rejected_line_then_it_completes_with_both_files(server):
    client = server.client()
    rejected = json.dumps({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": "fake-model", "messages": [], "fail_with": 400}})
    file_id = upload_input(client, [chat_line("a"), rejected, chat_line("c")])

    batch = create(client, input_file_id=file_id)

    done = wait_for_status(client, batch.id, {"completed"})
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    assert done.usage is not None and done.usage.total_tokens > 0
    output = _lines(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["a", "c"]
    assert output[0]["response"]["status_code"] == 200
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "echo: hello a"
    assert output[0]["error"] is None
    errors = _lines(client, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["bad"]
    assert errors[0]["response"]["status_code"] == 400
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_given_a_batch_whose_every_line_fails_then_it_completes_without_an_output_file(server):
    client = server.client()
    failing = [json.dumps({"custom_id": f"f{i}", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": "fake-model", "messages": [], "fail_with": 422}})
               for i in range(3)]

    batch = create(client, input_file_id=upload_input(client, failing))

    done = wait_for_status(client, batch.id, {"completed"})
    assert done.output_file_id is None
    assert [line["custom_id"] for line in _lines(client, done.error_file_id)] == ["f0", "f1", "f2"]


def test_given_each_endpoint_when_batched_then_the_output_bodies_are_that_endpoints_objects(server):
    client = server.client()
    cases = [
        ("/v1/completions", {"model": "fake-model", "prompt": "hi"}, "text_completion"),
        ("/v1/embeddings", {"model": "fake-embed", "input": ["a", "b"]}, "list"),
        ("/v1/responses", {"model": "fake-model", "input": "hi"}, "response"),
    ]
    for endpoint, body, kind in cases:
        line = json.dumps({"custom_id": "x", "method": "POST", "url": endpoint, "body": body})

        batch = create(client, input_file_id=upload_input(client, [line]), endpoint=endpoint)

        done = wait_for_status(client, batch.id, {"completed"})
        assert (done.request_counts.total, done.request_counts.completed) == (1, 1), endpoint
        output = _lines(client, done.output_file_id)
        assert output[0]["response"]["body"]["object"] == kind, endpoint
