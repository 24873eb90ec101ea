#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz corpora into fuzz/corpus/<target>/seed-*.

Seeds are realistic inputs in each target's input format (see the header of
each target): real JSONL request lines, create bodies with keys, multipart
forms as the openai SDK sends them, and the API Gateway events in events/.
The committed corpora are these seeds plus what the fuzzer found, minimised;
run this again only to add seeds (`python3 fuzz/seeds.py`).
"""

import base64
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
EVENTS = FUZZ.parent / "events"
BOUNDARY = "lb-fuzz-boundary"  # fuzz_targets/multipart_upload.rs


def write(target, name, data):
    folder = FUZZ / "corpus" / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def line(custom_id, url="/v1/chat/completions", body=None, **extra):
    if body is None:
        body = {"model": "test-model", "messages": [{"role": "user", "content": f"hello {custom_id}"}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra})


def jsonl(*lines, end="\n"):
    return "".join(l + end for l in lines).encode()


CHAT = [line("request-1"), line("request-2")]
JSONL = {
    "chat": jsonl(*CHAT),
    "chat-crlf-bom": b"\xef\xbb\xbf" + jsonl(*CHAT, end="\r\n"),
    "blank-lines": jsonl(CHAT[0], "", "   ", CHAT[1]),
    "no-final-newline": jsonl(*CHAT)[:-1],
    "duplicate-custom-id": jsonl(line("a"), line("a")),
    "embeddings": jsonl(line("e", "/v1/embeddings", {"model": "test-model", "input": ["x", "y"]})),
    "completions": jsonl(line("c", "/v1/completions", {"model": "test-model", "prompt": "p"})),
    "responses": jsonl(line("r", "/v1/responses", {"model": "test-model", "input": "hi"})),
    "moderations": jsonl(line("m", "/v1/moderations", {"input": "x"})),
    "wrong-url": jsonl(line("w", "/v1/embeddings")),
    "get-method": jsonl(line("g", method="GET")),
    "missing-fields": jsonl('{"custom_id": "x"}', '{"method": "POST"}', "{}"),
    "not-objects": jsonl("[1, 2]", '"text"', "42", "null"),
    "bad-json": jsonl('{"custom_id": "a",', "{'single': 'quotes'}", "\ufffd"),
    "bad-utf8": b'{"custom_id": "\xff\xfe"}\n',
    "unknown-model": jsonl(line("u", body={"model": "no-such-model", "messages": []})),
    "nested": jsonl(line("n", body={"model": "test-model", "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}], "temperature": 0.5, "n": 2})),
}


def jsonl_seeds():
    # [chunk size - 1][options: endpoint in bits 0-2, model list in bit 3][content]
    for i, (name, content) in enumerate(JSONL.items()):
        for size, options in [(255, 0b1000), (i % 7, i % 5)]:
            write("jsonl_lines", f"{name}-{size}-{options}", bytes([size, options]) + content)


def create_seeds():
    body = {"input_file_id": "file-abc123", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    full = {**body, "metadata": {"project": "demo", "k": ""}, "output_expires_after": {"anchor": "created_at", "seconds": 3600}, "max_concurrency": 8}
    cases = {
        "minimal": (None, body),
        "header-key": (b"demo-key-1", body),
        "quoted-header-key": (b'"demo \\"key\\" 1"', body),
        "body-key": (None, {**body, "idempotency_key": "demo-key-1"}),
        "both-keys-agree": (b"k1", {**body, "idempotency_key": "k1"}),
        "both-keys-differ": (b"k1", {**body, "idempotency_key": "k2"}),
        "full": (b"full-key", full),
        "embeddings": (None, {**body, "endpoint": "/v1/embeddings"}),
        "bad-window": (None, {**body, "completion_window": "48h"}),
        "unknown-field": (None, {**body, "extra": 1}),
        "too-much-metadata": (None, {**body, "metadata": {str(i): "v" for i in range(17)}}),
        "bad-expiry": (None, {**body, "output_expires_after": {"anchor": "now", "seconds": 1}}),
        "bad-concurrency": (None, {**body, "max_concurrency": 0}),
        "empty-key": (b"", body),
    }
    for name, (header, value) in cases.items():
        data = json.dumps(value).encode()
        write("create_batch", name, data if header is None else header + b"\n" + data)
    write("create_batch", "not-json", b"{\"input_file_id\": ")
    write("create_batch", "array", b"k\n[]")


def form(*fields):
    out = b""
    for field in fields:
        out += f"--{BOUNDARY}\r\n".encode()
        if len(field) == 2:
            name, value = field
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value
        else:
            name, filename, value = field
            out += (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode() + value
        out += b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def multipart_seeds():
    batch = JSONL["chat"]
    files = {
        "batch-file": form(("purpose", b"batch"), ("file", "input.jsonl", batch)),
        "file-first": form(("file", "input.jsonl", batch), ("purpose", b"batch")),
        "user-data": form(("purpose", b"user_data"), ("file", "notes.txt", b"any bytes\x00\xff")),
        "expires-after": form(("purpose", b"batch"), ("expires_after[anchor]", b"created_at"), ("expires_after[seconds]", b"3600"), ("file", "input.jsonl", batch)),
        "invalid-jsonl": form(("purpose", b"batch"), ("file", "input.jsonl", b"not json\n")),
        "no-file": form(("purpose", b"batch")),
        "unknown-field": form(("purpose", b"batch"), ("other", b"x"), ("file", "a.jsonl", batch)),
        "truncated": form(("purpose", b"batch"), ("file", "input.jsonl", batch))[:120],
    }
    parts = {
        "part": form(("data", "blob", batch[:64])),
        "part-text": form(("data", batch[:64])),
        "part-two-fields": form(("data", "blob", b"x"), ("data", "blob", b"y")),
    }
    # [options: bit 0 the route (0 files, 1 parts), bits 1-7 the chunk size - 1][body]
    for name, body in files.items():
        for size in (0, 7, 127):
            write("multipart_upload", f"files-{name}-{size}", bytes([size << 1]) + body)
    for name, body in parts.items():
        for size in (0, 127):
            write("multipart_upload", f"parts-{name}-{size}", bytes([size << 1 | 1]) + body)


def apigw_seeds():
    for path in sorted(EVENTS.glob("*.json")):
        write("apigw_event", path.stem, path.read_bytes())
    template = json.loads((EVENTS / "list_batches.json").read_text())

    def event(method, path, query="", headers=None, body=None, base64_body=False):
        e = json.loads(json.dumps(template))
        e["routeKey"] = f"{method} {path}"
        e["rawPath"] = path
        e["rawQueryString"] = query
        e["requestContext"]["http"]["method"] = method
        e["requestContext"]["http"]["path"] = path
        e["headers"].update(headers or {})
        if body is not None:
            e["body"] = base64.b64encode(body).decode() if base64_body else body.decode()
            e["isBase64Encoded"] = base64_body
        return json.dumps(e, indent=1).encode()

    upload = form(("purpose", b"batch"), ("file", "input.jsonl", JSONL["chat"]))
    multipart = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    write("apigw_event", "upload-file-base64", event("POST", "/v1/files", headers=multipart, body=upload, base64_body=True))
    write("apigw_event", "list-files", event("GET", "/v1/files", "purpose=batch&limit=1&order=asc"))
    write("apigw_event", "file-content", event("GET", "/v1/files/file-abc/content"))
    write("apigw_event", "delete-file", event("DELETE", "/v1/files/file-abc"))
    write("apigw_event", "create-upload", event("POST", "/v1/uploads", headers={"content-type": "application/json"}, body=json.dumps({"filename": "f.jsonl", "purpose": "batch", "bytes": 10, "mime_type": "application/jsonl"}).encode()))
    write("apigw_event", "complete-upload", event("POST", "/v1/uploads/upload_abc/complete", body=b'{"part_ids": []}'))
    write("apigw_event", "bad-query", event("GET", "/v1/batches", "limit=-1&after=%ff"))
    write("apigw_event", "unknown-route", event("PUT", "/v2/nothing"))
    write("apigw_event", "health", event("GET", "/health"))


if __name__ == "__main__":
    jsonl_seeds()
    create_seeds()
    multipart_seeds()
    apigw_seeds()
