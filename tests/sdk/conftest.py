"""Fixtures that run the real `lambda-batches` binary for the SDK suite.

Every test talks to the service the way a customer does: over HTTP, through the
official `openai` Python SDK. Each test runs once per storage backend:

- `embedded`: the SQLite store, in a fresh temporary `BATCHES_DATA_DIR`;
- `moto`: DynamoDB, as a fresh table in the moto server at `LB_MOTO_ENDPOINT`,
  created with the key schema of `BatchesTable` in template.yaml, so the table
  the suite runs against is the one that gets deployed; and S3, as a fresh
  bucket (`BATCHES_BUCKET`) in the same moto server, for file bytes.

`scripts/test.sh` builds the binary, starts moto and sets the variables. To run
the suite by hand: `LB_MOTO_ENDPOINT=http://127.0.0.1:PORT pytest tests/sdk`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import openai
import pytest
import yaml

from helpers import FILES_INLINE_CONTENT_MAX_BYTES

ROOT = Path(__file__).resolve().parents[2]
# Resolved now: the server runs with its own temp directory as cwd.
BINARY = Path(os.environ.get("LB_BINARY", ROOT / "target" / "debug" / "lambda-batches")).resolve()
FAKE_UPSTREAM = Path(
    os.environ.get("LB_FAKE_UPSTREAM", ROOT / "target" / "debug" / "examples" / "fake_upstream")
).resolve()
TEMPLATE = ROOT / "template.yaml"

API_KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}
BACKENDS = ["embedded", "moto"]

# A debug build starts in well under a second; the bound only stops a hung start
# from hanging the suite.
STARTUP_TIMEOUT_S = 30
# The SDK's own default is 10 minutes: far too long to learn that a request hung.
REQUEST_TIMEOUT_S = 10


@dataclass
class Server:
    """A running `lambda-batches` process."""

    base_url: str
    log_path: Path
    clients: list[openai.OpenAI] = field(default_factory=list)

    def client(self, api_key: str = "key-a", **options) -> openai.OpenAI:
        """An SDK client for this server, closed when the server stops. Retries
        are off unless a test asks for them, so a flaky answer shows up as a
        failure, not as a slow pass."""
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", REQUEST_TIMEOUT_S)
        client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=api_key, **options)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        # Also closes an `http_client` a test passed in. Unclosed clients would
        # leave sockets for the garbage collector (a ResourceWarning, an error here).
        for client in self.clients:
            client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


# --- storage: one isolated store per server -------------------------------------


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation YAML: accepts any `!Tag` (`!Ref`, `!GetAtt`, `!Sub`,
    ...) as its plain value. Only BatchesTable's literal properties are used."""


def _construct_tagged(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


_TemplateLoader.add_multi_constructor("!", _construct_tagged)


def batches_table_schema() -> dict:
    """The CreateTable arguments that template.yaml's BatchesTable defines."""
    template = yaml.load(TEMPLATE.read_text(), Loader=_TemplateLoader)
    properties = template["Resources"]["BatchesTable"]["Properties"]
    keys = ["AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode"]
    return {key: properties[key] for key in keys}


def _aws_settings() -> dict[str, str]:
    # Emulators accept any credentials, but the AWS SDKs refuse to sign without some.
    return {
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
    }


@contextlib.contextmanager
def moto_table() -> Iterator[dict[str, str]]:
    """A fresh, uniquely named table in the moto server; yields the server's env."""
    endpoint = os.environ.get("LB_MOTO_ENDPOINT")
    if not endpoint:
        pytest.fail(
            "LB_MOTO_ENDPOINT is not set, so the moto backend cannot run. "
            "Run scripts/test.sh (it starts moto), or start "
            "`.tools/venv/bin/moto_server -p PORT` and set "
            "LB_MOTO_ENDPOINT=http://127.0.0.1:PORT.",
            pytrace=False,
        )
    aws = _aws_settings()
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=aws["AWS_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )
    table = f"batches-sdk-{uuid.uuid4().hex[:12]}"
    dynamodb.create_table(TableName=table, **batches_table_schema())
    # moto makes tables ACTIVE at once; the waiter's first poll returns.
    dynamodb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    try:
        yield {"BATCHES_TABLE": table, "AWS_ENDPOINT_URL": endpoint, **aws}
    finally:
        dynamodb.delete_table(TableName=table)


def moto_s3():
    """An S3 client for the moto server (`moto_table` checked the endpoint)."""
    aws = _aws_settings()
    return boto3.client(
        "s3",
        endpoint_url=os.environ["LB_MOTO_ENDPOINT"],
        region_name=aws["AWS_REGION"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
    )


@contextlib.contextmanager
def moto_bucket() -> Iterator[dict[str, str]]:
    """A fresh, uniquely named bucket in the moto server, emptied and removed after."""
    s3 = moto_s3()
    bucket = f"lb-sdk-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    try:
        yield {"BATCHES_BUCKET": bucket}
    finally:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def storage(backend: str, tmp_dir: Path) -> Iterator[dict[str, str]]:
    """The environment that points a server at a fresh, empty store."""
    if backend == "embedded":
        data_dir = tmp_dir / "data"
        data_dir.mkdir()
        yield {"BATCHES_DATA_DIR": str(data_dir)}
    elif backend == "moto":
        with moto_table() as table_env, moto_bucket() as bucket_env:
            yield {**table_env, **bucket_env}
    else:
        raise ValueError(f"unknown backend {backend!r}")


# --- the server process -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=1) as response:
            return response.status == 200 and json.load(response) == {"status": "ok"}
    except (OSError, ValueError):  # not listening yet, or an unexpected answer
        return False


# Fake upstreams by latency (ms) and models served, each started once on first use.
_FAKE_UPSTREAMS: dict[tuple[int, str], tuple[subprocess.Popen, str]] = {}

# Every request line of the slow upstream takes this long: long enough that a
# cancel sent right after a create lands while the batch runs, whatever the load.
SLOW_UPSTREAM_LATENCY_MS = 4000


def fake_upstream_url(latency_ms: int = 0, models: str = "fake-model,fake-embed") -> str:
    """A fake OpenAI-compatible upstream (examples/fake_upstream.rs, which prints
    its base URL on its first line), serving `models` (comma-separated) and
    answering every line after `latency_ms`."""
    if (latency_ms, models) not in _FAKE_UPSTREAMS:
        if not FAKE_UPSTREAM.is_file():
            pytest.fail(
                f"{FAKE_UPSTREAM} does not exist: run `cargo build --example fake_upstream` "
                "(scripts/test.sh does), or point LB_FAKE_UPSTREAM at it.",
                pytrace=False,
            )
        process = subprocess.Popen(
            [str(FAKE_UPSTREAM), "--port", "0", "--models", models,
             "--latency-ms", str(latency_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("listening on "):
            process.kill()
            pytest.fail(f"fake upstream did not start: {line!r}", pytrace=False)
        _FAKE_UPSTREAMS[(latency_ms, models)] = (process, line.removeprefix("listening on ").strip())
    return _FAKE_UPSTREAMS[(latency_ms, models)][1]


@pytest.fixture(scope="session", autouse=True)
def _stop_fake_upstreams() -> Iterator[None]:
    yield
    for process, _ in _FAKE_UPSTREAMS.values():
        process.terminate()
        process.wait(timeout=10)
        if process.stdout:  # the pipe its first line came through
            process.stdout.close()


@contextlib.contextmanager
def running_server(
    backend: str, tmp_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Starts the binary on a free port against a fresh store, with `extra_env`
    on top of the suite's settings; stops it afterwards."""
    if not BINARY.is_file():
        pytest.fail(
            f"{BINARY} does not exist: run `cargo build --bin lambda-batches` "
            "(scripts/test.sh does), or point LB_BINARY at the binary.",
            pytrace=False,
        )
    with storage(backend, tmp_dir) as storage_env:
        port = _free_port()
        # Start from a clean slate: a developer's own BATCHES_* or AWS_ENDPOINT_URL
        # must not leak into the server under test.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("BATCHES_") and k != "AWS_ENDPOINT_URL"
        }
        env.update(
            PORT=str(port),
            BATCHES_HOST="127.0.0.1",
            UPSTREAM_BASE_URL=fake_upstream_url(),
            # Small shards, so even the suite's small inputs run in several.
            BATCHES_SHARD_BYTES="512",
            BATCHES_SEGMENT_LINES="2",
            BATCHES_API_KEYS=",".join(f"{k}:{t}" for k, t in API_KEYS.items()),
            RUST_LOG=os.environ.get("RUST_LOG", "info"),
            **storage_env,
        )
        env.update(extra_env or {})
        server = Server(base_url=f"http://127.0.0.1:{port}", log_path=tmp_dir / "server.log")
        with server.log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(BINARY)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_dir
            )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not _health_ok(server.base_url):
                if process.poll() is not None:
                    pytest.fail(
                        f"lambda-batches ({backend}) exited with {process.returncode} "
                        f"before answering /health:\n{server.log()}",
                        pytrace=False,
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"lambda-batches ({backend}) did not answer /health within "
                        f"{STARTUP_TIMEOUT_S} s:\n{server.log()}",
                        pytrace=False,
                    )
                time.sleep(0.05)
            yield server
        finally:
            server.close_clients()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- fixtures ---------------------------------------------------------------------


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per backend, shared by the tests: each test keeps to its own data
    through unique idempotency keys and the ids it created."""
    with running_server(backend, tmp_path_factory.mktemp(backend)) as running:
        yield running


@pytest.fixture
def fresh_server(backend: str, tmp_path: Path) -> Iterator[Server]:
    """A server with an empty store of its own, for tests that must see exactly
    the batches they created (listing)."""
    with running_server(backend, tmp_path) as running:
        yield running


@pytest.fixture(scope="session")
def slow_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose upstream takes SLOW_UPSTREAM_LATENCY_MS per line: batches
    stay in progress long enough to be cancelled mid-run."""
    extra = {"UPSTREAM_BASE_URL": fake_upstream_url(SLOW_UPSTREAM_LATENCY_MS)}
    with running_server(backend, tmp_path_factory.mktemp(f"{backend}-slow"), extra) as running:
        yield running


@pytest.fixture(scope="session")
def files_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server for the file tests, with the inline content limit lowered to
    1 MiB so that larger files exercise the presigned redirect (on S3)."""
    extra = {"BATCHES_INLINE_CONTENT_MAX_BYTES": str(FILES_INLINE_CONTENT_MAX_BYTES)}
    with running_server(backend, tmp_path_factory.mktemp(f"{backend}-files"), extra) as running:
        yield running
