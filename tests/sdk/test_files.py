"""The Files and Uploads APIs through the official SDK: upload, retrieve, read
(inline, or through the presigned redirect on S3), list, delete, and large
files in parts with `uploads.upload_file_chunked`."""

import json
from pathlib import Path

import openai
import pytest

from helpers import FILES_INLINE_CONTENT_MAX_BYTES


def jsonl(count: int, pad: int = 0) -> bytes:
    """`count` valid chat-completions request lines, each padded by `pad` bytes."""
    lines = [
        json.dumps(
            {
                "custom_id": f"r{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m", "messages": [{"role": "user", "content": "x" * pad}]},
            }
        )
        for n in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def test_given_a_batch_file_when_created_then_it_is_retrieved_read_listed_and_deleted(files_server):
    client = files_server.client()
    content = jsonl(3)

    created = client.files.create(file=("input.jsonl", content), purpose="batch")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(content)
    assert created.filename == "input.jsonl"
    assert created.purpose == "batch"
    assert created.status == "processed"
    assert created.expires_at == created.created_at + 30 * 86_400
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).read() == content
    assert created.id in [f.id for f in client.files.list(purpose="batch")]

    deleted = client.files.delete(created.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    with pytest.raises(openai.NotFoundError) as error:
        client.files.retrieve(created.id)
    assert created.id in str(error.value)


def test_given_expires_after_when_created_then_the_sdk_form_encoding_is_understood(files_server):
    client = files_server.client()

    created = client.files.create(
        file=("notes.txt", b"not jsonl at all"),
        purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 7200},
    )

    assert created.purpose == "user_data"
    assert created.expires_at == created.created_at + 7200


def test_given_a_file_above_the_inline_limit_when_read_then_the_bytes_arrive_whole(
    files_server, backend
):
    client = files_server.client()
    content = jsonl(1200, pad=1000)
    assert len(content) > FILES_INLINE_CONTENT_MAX_BYTES
    created = client.files.create(file=("big.jsonl", content), purpose="batch")

    response = client.files.with_raw_response.content(created.id)

    assert response.parse().read() == content
    redirects = [r.status_code for r in response.http_response.history]
    if backend == "moto":
        # S3-backed: the service answers 307 to a presigned URL and the SDK follows.
        assert redirects == [307]
        assert "X-Amz-Signature" in str(response.http_response.url)
    else:
        assert redirects == []


@pytest.mark.parametrize(
    "content, detail",
    [
        (b"", "the file is empty (no non-blank line)."),
        (b"{malformed json\n", "line 1, the first request, is not valid JSON."),
        (b'\n["not", "an", "object"]\n{"a": 1}\n', "line 2, the first request, is not a JSON object."),
    ],
    ids=["empty", "malformed", "not-an-object"],
)
def test_given_an_empty_file_or_a_bad_first_line_when_created_then_bad_request(files_server, content, detail):
    client = files_server.client()

    with pytest.raises(openai.BadRequestError) as error:
        client.files.create(file=("bad.jsonl", content), purpose="batch")

    assert error.value.status_code == 400
    assert str(error.value).endswith(f"Invalid file format for Batch API. Must be .jsonl: {detail}")
    assert error.value.param == "file"
    assert error.value.code == "invalid_file_format"


def test_given_bad_lines_after_the_first_when_created_then_the_file_is_accepted(files_server):
    client = files_server.client()
    content = jsonl(1) + b'\n["not", "an", "object"]\n{bad json\n'

    created = client.files.create(file=("later.jsonl", content), purpose="batch")

    assert created.bytes == len(content)
    assert client.files.content(created.id).read() == content


def test_given_another_tenants_file_then_it_is_not_found(files_server):
    owner, stranger = files_server.client("key-a"), files_server.client("key-b")
    created = owner.files.create(file=("mine.jsonl", jsonl(1)), purpose="batch")

    with pytest.raises(openai.NotFoundError):
        stranger.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        stranger.files.delete(created.id)
    assert created.id not in [f.id for f in stranger.files.list()]


def test_given_files_of_two_purposes_when_listed_then_purpose_order_and_paging_apply(fresh_server):
    client = fresh_server.client()
    batch = [client.files.create(file=(f"b{n}.jsonl", jsonl(1)), purpose="batch").id for n in range(3)]
    other = client.files.create(file=("u.txt", b"u"), purpose="user_data").id

    assert [f.id for f in client.files.list()] == [other, *batch[::-1]]
    assert [f.id for f in client.files.list(order="asc")] == [*batch, other]
    assert [f.id for f in client.files.list(purpose="batch")] == batch[::-1]
    # The auto-pager follows `after` across pages of one.
    assert [f.id for f in client.files.list(purpose="batch", limit=1)] == batch[::-1]
    page = client.files.list(purpose="batch", limit=2)
    assert [f.id for f in page.data] == batch[::-1][:2]
    assert page.has_more is True


def test_given_a_file_over_10_mb_when_uploaded_in_4_mb_parts_then_one_file_holds_it(
    files_server, tmp_path: Path
):
    client = files_server.client()
    content = jsonl(10_500, pad=1000)
    assert len(content) > 10 * 1024 * 1024
    path = tmp_path / "large.jsonl"
    path.write_bytes(content)

    # 4 MiB parts: what fits through API Gateway and Lambda's 6 MB payload.
    upload = client.uploads.upload_file_chunked(
        file=path, mime_type="application/jsonl", purpose="batch", part_size=4 * 1024 * 1024
    )

    assert upload.status == "completed"
    assert upload.bytes == len(content)
    assert upload.filename == "large.jsonl"
    assert upload.file is not None
    assert upload.file.bytes == len(content)
    assert upload.file.purpose == "batch"
    assert client.files.retrieve(upload.file.id).bytes == len(content)
    assert client.files.content(upload.file.id).read() == content


def test_given_a_bad_first_line_in_parts_when_completed_then_bad_request(files_server):
    client = files_server.client()
    content = b"42\n" + jsonl(2)

    with pytest.raises(openai.BadRequestError) as error:
        client.uploads.upload_file_chunked(
            file=content,
            filename="bad.jsonl",
            bytes=len(content),
            mime_type="application/jsonl",
            purpose="batch",
            part_size=100,
        )

    assert "Must be .jsonl: line 1, the first request, is not a JSON object." in str(error.value)


def test_given_an_upload_when_cancelled_then_it_takes_no_more_parts(files_server):
    client = files_server.client()
    upload = client.uploads.create(
        bytes=3, filename="x.jsonl", mime_type="application/jsonl", purpose="batch"
    )
    client.uploads.parts.create(upload_id=upload.id, data=b"{}\n")

    cancelled = client.uploads.cancel(upload.id)

    assert cancelled.status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload_id=upload.id, data=b"{}\n")
