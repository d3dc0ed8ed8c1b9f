"""The S3 store against a real moto server on loopback (no mocks), side by side with the local store.

A module-scoped ``moto_server`` subprocess stands in for S3. The same contract assertions run on
``LocalStore`` and ``S3Store``; ``open_store`` is checked for how it picks a store; failures
(missing bucket, unreachable endpoint) must be one clear ``StoreUnavailable`` and come back fast;
and ``medtrinity run ... --out s3://...`` is run end to end through the command line.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pyarrow.parquet as pq
import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import StoreUnavailable
from medtrinity_tasks.sources.catalog import CATALOG_DIR
from medtrinity_tasks.sources.samples.ct import UNLABELLED_CASES
from medtrinity_tasks.storage import LocalStore, S3Store, Store, open_store
from tests.support.servers import AWS_LEAKS, DUMMY_AWS, free_port, isolated_aws_env, moto_server

BIN = Path(sys.executable).parent
SOURCE_ID = "synthetic_ct_abdomen"
UNREACHABLE_BUDGET_S = 20


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory) -> dict:
    """Dummy AWS credentials and region for this module, in os.environ and as a dict for subprocesses."""
    tmp = tmp_path_factory.mktemp("aws")
    env = isolated_aws_env(dict(os.environ), tmp)
    with pytest.MonkeyPatch.context() as mp:
        for key in AWS_LEAKS:
            mp.delenv(key, raising=False)
        for key in (
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_EC2_METADATA_DISABLED",
            "NO_PROXY",
            "no_proxy",
            *DUMMY_AWS,
        ):
            mp.setenv(key, env[key])
        yield env


@pytest.fixture(scope="module")
def moto_endpoint(aws_env, tmp_path_factory) -> str:
    """A real ``moto_server`` on a free loopback port; yields its endpoint URL, stops it afterwards."""
    port = free_port()
    with moto_server(port, tmp_path_factory.mktemp("moto") / "moto_server.log", aws_env):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def s3(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint)


@pytest.fixture(scope="module")
def bucket(s3) -> str:
    name = "medtrinity-test"
    s3.create_bucket(Bucket=name)
    return name


def _new_bucket(s3) -> str:
    name = f"mt-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def _s3_key(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    assert parsed.scheme == "s3", uri
    return parsed.netloc, parsed.path.lstrip("/")


# --------------------------------------------------------------------------------------------------
# The store contract, on both stores


@dataclass
class Case:
    store: Store
    kind: str
    put_outside: Callable[[str, bytes], None]
    """Write an object next to, but outside, the store's prefix (a sibling with the same name start)."""
    expected_uri: Callable[[str], str]


@pytest.fixture(params=["local", "s3"])
def case(request, tmp_path) -> Case:
    if request.param == "local":
        root = tmp_path / "store" / "pre"
        store = LocalStore(root)

        def put_outside(name: str, data: bytes) -> None:
            path = tmp_path / "store" / "pre-sibling" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        return Case(store, "local", put_outside, lambda key: str(root.absolute() / key))

    s3 = request.getfixturevalue("s3")
    bucket = request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("moto_endpoint")
    prefix = f"contract/{uuid.uuid4().hex[:8]}/pre"
    store = S3Store(bucket, prefix, endpoint_url=endpoint)

    def put_outside(name: str, data: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"{prefix}-sibling/{name}", Body=data)

    return Case(store, "s3", put_outside, lambda key: f"s3://{bucket}/{prefix}/{key}")


def test_write_read_roundtrip(case):
    data = bytes(range(256)) * 17
    uri = case.store.write_bytes("a/b/blob.bin", data)
    assert uri == case.store.key_uri("a/b/blob.bin") == case.expected_uri("a/b/blob.bin")
    assert case.store.read_bytes("a/b/blob.bin") == data
    case.store.write_bytes("a/b/blob.bin", b"second")  # overwrite replaces
    assert case.store.read_bytes("a/b/blob.bin") == b"second"
    case.store.write_bytes("empty", b"")
    assert case.store.read_bytes("empty") == b""


def test_exists(case):
    case.store.write_bytes("sources/x/manifest.json", b"{}")
    assert case.store.exists("sources/x/manifest.json") is True
    assert case.store.exists("sources/x/missing.json") is False
    assert case.store.exists("sources/x") is False  # a "folder" is not a key
    assert case.store.exists("sources/x/manifest.js") is False  # nor is a key's prefix
    case.put_outside("only-outside", b"x")
    assert case.store.exists("only-outside") is False


def test_list_sorted_and_relative_to_store_prefix(case):
    for key in ("b/2.txt", "a/sub/3.txt", "c.txt", "a/1.txt", "a/0.txt"):
        case.store.write_bytes(key, key.encode())
    case.put_outside("a/outside.txt", b"not in the store")

    assert case.store.list("") == ["a/0.txt", "a/1.txt", "a/sub/3.txt", "b/2.txt", "c.txt"]
    assert case.store.list("a/") == ["a/0.txt", "a/1.txt", "a/sub/3.txt"]
    assert case.store.list("a/sub/") == ["a/sub/3.txt"]
    assert case.store.list("missing/") == []
    for key in case.store.list(""):  # what list returns reads back through the same store
        assert case.store.read_bytes(key) == key.encode()


def test_list_prefix_without_slash_is_a_folder_on_both_stores(case):
    for key in ("a/1.txt", "ab/2.txt"):
        case.store.write_bytes(key, b"x")
    assert case.store.list("a") == ["a/1.txt"]


def test_delete(case):
    case.store.write_bytes("d/keep.txt", b"keep")
    case.store.write_bytes("d/drop.txt", b"drop")
    case.store.delete("d/drop.txt")
    assert case.store.exists("d/drop.txt") is False
    assert case.store.list("d/") == ["d/keep.txt"]
    case.store.delete("d/drop.txt")  # deleting what is gone is not an error
    case.store.delete("d/never-was.txt")
    assert case.store.read_bytes("d/keep.txt") == b"keep"


def test_write_json_read_json(case):
    value = {"b": [1, 2.5, None, True], "a": {"nested": "ü — unicode"}, "n": 0}
    uri = case.store.write_json("m/manifest.json", value)
    assert uri == case.expected_uri("m/manifest.json")
    assert case.store.read_json("m/manifest.json") == value
    text = case.store.read_bytes("m/manifest.json").decode()
    assert text == json.dumps(value, indent=2, sort_keys=True)


def test_key_uri_format(case):
    assert case.store.key_uri("sources/x/shards/shard-00000.parquet") == case.expected_uri(
        "sources/x/shards/shard-00000.parquet"
    )
    if case.kind == "s3":
        assert case.store.uri.startswith("s3://") and not case.store.uri.endswith("/")
    else:
        assert Path(case.store.uri).is_absolute()


def test_conditional_writes_create_replace_and_delete_only_what_was_read(case):
    assert case.store.read_versioned("c/lease.json") is None
    assert case.store.write_if("c/lease.json", b"first", None) is True
    assert case.store.write_if("c/lease.json", b"second", None) is False  # it exists now
    data, version = case.store.read_versioned("c/lease.json")
    assert data == b"first"
    assert case.store.write_if("c/lease.json", b"second", version) is True
    assert case.store.write_if("c/lease.json", b"third", version) is False  # changed since it was read
    assert case.store.delete_if("c/lease.json", version) is False
    data, current = case.store.read_versioned("c/lease.json")
    assert data == b"second" and current != version
    assert case.store.delete_if("c/lease.json", current) is True and not case.store.exists("c/lease.json")
    assert case.store.write_if("c/lease.json", b"x", current) is False  # replacing what is gone
    assert case.store.list("c/") == []  # no lock files in listings


def test_moto_answers_conditional_writes_as_s3_does(s3, bucket):
    """The lease relies on these answers: If-None-Match and If-Match on PUT, If-Match on DELETE."""
    from botocore.exceptions import ClientError

    first = s3.put_object(Bucket=bucket, Key="conditional/k", Body=b"1", IfNoneMatch="*")
    attempts = [
        lambda: s3.put_object(Bucket=bucket, Key="conditional/k", Body=b"2", IfNoneMatch="*"),
        lambda: s3.put_object(Bucket=bucket, Key="conditional/k", Body=b"2", IfMatch='"not-its-etag"'),
        lambda: s3.delete_object(Bucket=bucket, Key="conditional/k", IfMatch='"not-its-etag"'),
    ]
    for attempt in attempts:
        with pytest.raises(ClientError) as refused:
            attempt()
        assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.put_object(Bucket=bucket, Key="conditional/k", Body=b"3", IfMatch=first["ETag"])
    assert s3.get_object(Bucket=bucket, Key="conditional/k")["Body"].read() == b"3"


def _lease_from_elsewhere(run_id: str, expires_in_s: float) -> bytes:
    now = datetime.now(UTC)
    return json.dumps({
        "run_id": run_id, "holder": {"host": "other-host", "pid": 4242},
        "taken_at": now.isoformat(), "renewed_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=expires_in_s)).isoformat(),
    }).encode()  # fmt: skip


def test_the_run_lease_on_s3_is_refused_taken_when_expired_renewed_and_released(s3, moto_endpoint):
    from medtrinity_tasks.storage.lease import LeaseHeld, lease_key, release_lease, renew_lease, take_lease

    bucket = _new_bucket(s3)
    store, key = S3Store(bucket, "runs", endpoint_url=moto_endpoint), f"runs/{lease_key('src')}"
    s3.put_object(Bucket=bucket, Key=key, Body=_lease_from_elsewhere("scheduled__other", 3600))
    with pytest.raises(LeaseHeld, match=r"run scheduled__other \(host other-host, pid 4242\)"):
        take_lease(store, "src", "manual__mine", 60)
    s3.put_object(Bucket=bucket, Key=key, Body=_lease_from_elsewhere("scheduled__other", -1))  # it died
    take_lease(store, "src", "manual__mine", 60)  # replaced with If-Match on the dead lease's ETag
    assert json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["run_id"] == "manual__mine"
    record = json.loads(
        s3.get_object(Bucket=bucket, Key="runs/sources/src/failures/scheduled__other/run--1-killed.json")["Body"].read()
    )
    assert record["error_class"] == "RunLost" and record["task_id"] == "run"
    renew_lease(store, "src", "manual__mine", 60, "shard-00000")
    assert release_lease(store, "src", "manual__mine") is True
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=key)


def test_s3_prefix_is_normalised_and_may_be_empty(s3, moto_endpoint):
    bucket = _new_bucket(s3)
    store = S3Store(bucket, "/a/b/", endpoint_url=moto_endpoint)
    assert (store.prefix, store.uri) == ("a/b", f"s3://{bucket}/a/b")
    assert store.write_bytes("k.txt", b"v") == f"s3://{bucket}/a/b/k.txt"
    assert s3.get_object(Bucket=bucket, Key="a/b/k.txt")["Body"].read() == b"v"

    root = S3Store(bucket, "", endpoint_url=moto_endpoint)
    assert root.uri == f"s3://{bucket}"
    assert root.key_uri("k.txt") == f"s3://{bucket}/k.txt"
    root.write_bytes("top.txt", b"t")
    assert root.list("") == ["a/b/k.txt", "top.txt"]
    assert root.list("a/") == ["a/b/k.txt"]


def test_s3_list_pages_past_1000_keys(s3, moto_endpoint):
    bucket = _new_bucket(s3)
    store = S3Store(bucket, "p", endpoint_url=moto_endpoint)
    keys = [f"many/{i:05d}" for i in range(1005)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=f"p/{key}", Body=b"")
    assert store.list("many/") == keys


# --------------------------------------------------------------------------------------------------
# open_store


def test_open_store_s3_uses_endpoint_from_settings(s3, bucket, moto_endpoint):
    settings = load_settings({"MEDTRINITY_S3_ENDPOINT_URL": moto_endpoint})
    store = open_store(f"s3://{bucket}/opened/prefix", settings)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url) == (bucket, "opened/prefix", moto_endpoint)
    assert store.uri == f"s3://{bucket}/opened/prefix"
    store.write_bytes("hello.txt", b"hi")
    assert s3.get_object(Bucket=bucket, Key="opened/prefix/hello.txt")["Body"].read() == b"hi"


def test_open_store_s3_falls_back_to_aws_endpoint_url(bucket, moto_endpoint):
    store = open_store(f"s3://{bucket}/x", load_settings({"AWS_ENDPOINT_URL": moto_endpoint}))
    assert isinstance(store, S3Store) and store.endpoint_url == moto_endpoint


def test_open_store_plain_path_is_local(tmp_path):
    store = open_store(str(tmp_path / "out"), load_settings({}))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "out" and (tmp_path / "out").is_dir()


def test_open_store_relative_path_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("data/out", load_settings({}))
    assert isinstance(store, LocalStore) and store.root == tmp_path / "data" / "out"


def test_open_store_file_uri_is_local(tmp_path):
    store = open_store(f"file://{tmp_path / 'via-file'}", load_settings({}))
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path / "via-file" and (tmp_path / "via-file").is_dir()


def test_open_store_file_uri_with_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store("file://out", load_settings({}))
    assert isinstance(store, LocalStore) and store.root == tmp_path / "out"


@pytest.mark.parametrize("uri", ["gs://x", "gs://bucket/prefix", "http://example.com/out"])
def test_open_store_unsupported_scheme(uri):
    with pytest.raises(StoreUnavailable) as err:
        open_store(uri, load_settings({}))
    message = str(err.value)
    assert "unsupported output URI" in message and repr(uri) in message
    assert "s3://bucket/prefix" in message  # says what would work


def test_open_store_s3_without_bucket():
    with pytest.raises(StoreUnavailable, match="names no bucket"):
        open_store("s3:///prefix", load_settings({}))


# --------------------------------------------------------------------------------------------------
# Failures: one clear StoreUnavailable, quickly


def test_missing_bucket_names_the_bucket(moto_endpoint):
    name = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreUnavailable) as err:
        S3Store(name, "x", endpoint_url=moto_endpoint)
    assert repr(name) in str(err.value) and "does not exist" in str(err.value)
    assert moto_endpoint in str(err.value)

    settings = load_settings({"MEDTRINITY_S3_ENDPOINT_URL": moto_endpoint})
    with pytest.raises(StoreUnavailable, match=name):
        open_store(f"s3://{name}/runs", settings)


def test_unreachable_endpoint_fails_fast_and_says_so(aws_env):
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as err:
        open_store("s3://bucket/prefix", load_settings({"MEDTRINITY_S3_ENDPOINT_URL": endpoint}))
    elapsed = time.monotonic() - started
    message = str(err.value)
    assert "cannot reach" in message and endpoint in message, message
    assert "MEDTRINITY_S3_ENDPOINT_URL" in message  # says what to do
    assert elapsed < UNREACHABLE_BUDGET_S, f"took {elapsed:.1f}s to report an unreachable endpoint"


def test_silent_endpoint_fails_fast(aws_env):
    """An endpoint that accepts TCP connections but never answers (a hung server) is 'unreachable' too."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes handshakes; nothing ever accepts or answers
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    outcome: dict = {}

    def attempt() -> None:
        try:
            S3Store("bucket", "prefix", endpoint_url=endpoint)
        except Exception as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    try:
        worker.join(UNREACHABLE_BUDGET_S)
        elapsed = time.monotonic() - started
    finally:
        listener.close()  # resets the pending connections, so a still-waiting client gives up promptly
        worker.join(30)
    assert elapsed < UNREACHABLE_BUDGET_S, f"still waiting on a silent endpoint after {elapsed:.1f}s"
    assert isinstance(outcome.get("error"), StoreUnavailable) and "cannot reach" in str(outcome["error"])


def test_a_local_write_that_fails_is_one_line_naming_the_store_and_the_operation(tmp_path):
    store = LocalStore(tmp_path / "out")
    shards = tmp_path / "out" / "sources" / "x" / "shards"
    (shards / "shard-00000.parquet" / "in-the-way").mkdir(parents=True)  # a folder where the file must go
    with pytest.raises(StoreUnavailable) as failed:
        store.write_bytes("sources/x/shards/shard-00000.parquet", b"records")
    assert str(failed.value) == (
        f"local store {store.uri}: writing sources/x/shards/shard-00000.parquet failed: Is a directory "
        "(IsADirectoryError)"
    )
    assert isinstance(failed.value.__cause__, IsADirectoryError)  # what the failure record names
    assert not list(shards.glob(".tmp-*"))  # nothing half-written left behind
    (tmp_path / "out" / "a-file").write_text("x")
    with pytest.raises(
        StoreUnavailable, match=r"local store .*: writing a-file/k failed: .* \((FileExists|NotADirectory)"
    ):
        store.write_bytes("a-file/k", b"x")


def test_refused_or_missing_credentials_say_so_and_how_to_provide_them(aws_env, tmp_path, monkeypatch):
    from botocore.exceptions import ClientError

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with moto_server(port, tmp_path / "moto.log", dict(aws_env, INITIAL_NO_AUTH_ACTION_COUNT="2")):
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="guarded")  # moto checks keys after two calls
        store = S3Store("guarded", "runs", endpoint_url=endpoint)  # the second
        with pytest.raises(StoreUnavailable) as refused:
            store.write_bytes("sources/x/shards/shard-00000.parquet", b"x")
        message = str(refused.value)
        assert message.startswith(
            "S3 store s3://guarded/runs: writing sources/x/shards/shard-00000.parquet failed: the credentials were "
            "refused (InvalidAccessKeyId: "
        ), message
        assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message and "AWS_PROFILE" in message
        assert isinstance(refused.value.__cause__, ClientError)
        with pytest.raises(
            StoreUnavailable, match=r"opening failed: access denied \(403\): the credentials .*AWS_PROFILE"
        ):
            S3Store("guarded", "runs", endpoint_url=endpoint)  # a refused HEAD has no error code to say more
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # it caches the credentials it found
    with pytest.raises(StoreUnavailable) as missing:
        S3Store("guarded", "runs", endpoint_url=endpoint)
    assert str(missing.value).startswith(
        "S3 store s3://guarded/runs: opening failed: no AWS credentials were found (NoCredentialsError); boto3 takes "
        "them from its usual chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    ), missing.value


# --------------------------------------------------------------------------------------------------
# The command line, end to end on S3


def _cli_env(aws_env: dict, samples_dir: Path, endpoint: str) -> dict:
    env = {k: v for k, v in aws_env.items() if not k.startswith("MEDTRINITY_")}
    env.update(
        MEDTRINITY_SAMPLES_DIR=str(samples_dir),
        MEDTRINITY_S3_ENDPOINT_URL=endpoint,
        MEDTRINITY_RUNNER="inprocess",
        MEDTRINITY_KNOWLEDGE_DIR=os.environ["MEDTRINITY_KNOWLEDGE_DIR"],  # the session's index
    )
    return env


def test_cli_run_to_s3_end_to_end(s3, moto_endpoint, aws_env, samples_dir):
    bucket = _new_bucket(s3)
    result = subprocess.run(
        [str(BIN / "medtrinity"), "run", SOURCE_ID, "--out", f"s3://{bucket}/runs"],
        env=_cli_env(aws_env, samples_dir, moto_endpoint), check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    manifest_key = f"runs/sources/{SOURCE_ID}/manifest.json"
    assert f"s3://{bucket}/{manifest_key}" in result.stdout

    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    counts = manifest["counts"]
    assert counts["inputs"] == counts["used"] + counts["rejected"]
    assert counts["produced"] == counts["records"] + counts["quarantined"]
    assert counts["inputs"] == 8 + UNLABELLED_CASES and counts["rejected"] == 4
    assert len(manifest["rejected"]) == 4
    assert all(isinstance(r["reason"], str) and r["reason"].strip() for r in manifest["rejected"]), manifest["rejected"]
    assert {r["input"] for r in manifest["rejected"]} == {
        f"imagesTr/bad_{name}.nii.gz" for name in ("truncated", "mask_shape", "empty_mask", "not_nifti")
    }

    assert manifest["shards"], "manifest lists no shards"
    total_rows = total_quarantined = 0
    for shard in manifest["shards"]:
        shard_bucket, key = _s3_key(shard["uri"])
        assert shard_bucket == bucket and key.startswith(f"runs/sources/{SOURCE_ID}/shards/"), shard["uri"]
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert table.num_rows == shard["records"]
        total_rows += table.num_rows
        if shard["quarantine_uri"]:
            q_bucket, q_key = _s3_key(shard["quarantine_uri"])
            assert q_bucket == bucket
            quarantine = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=q_key)["Body"].read()))
            assert quarantine.num_rows == shard["quarantined"]
            total_quarantined += quarantine.num_rows
    assert total_rows > 0
    assert total_rows == counts["records"] and total_quarantined == counts["quarantined"]

    # Nothing was written outside the output prefix.
    listed = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    assert listed and all(key.startswith("runs/") for key in listed), listed


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("medtrinity: error:"), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_cli_unreachable_endpoint_is_one_line_error(aws_env, samples_dir):
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [str(BIN / "medtrinity"), "run", SOURCE_ID, "--out", "s3://some-bucket/runs"],
        env=_cli_env(aws_env, samples_dir, endpoint), check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    _assert_one_line_error(result, "cannot reach", endpoint)
    assert elapsed < UNREACHABLE_BUDGET_S + 30, f"the command took {elapsed:.1f}s"  # + interpreter start-up


def test_cli_missing_bucket_is_one_line_error(moto_endpoint, aws_env, samples_dir):
    name = f"no-such-bucket-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [str(BIN / "medtrinity"), "run", SOURCE_ID, "--out", f"s3://{name}/runs"],
        env=_cli_env(aws_env, samples_dir, moto_endpoint), check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    _assert_one_line_error(result, repr(name), "does not exist")


def test_a_store_that_dies_mid_run_is_one_line_and_the_rerun_completes_without_duplicates(
    aws_env, samples_dir, tmp_path
):
    """moto keeps objects in memory; its recorder logs every request, and replaying the log into a
    restarted server brings back the bucket as it was when the server died."""
    port, bucket = free_port(), "dies-mid-run"
    endpoint = f"http://127.0.0.1:{port}"
    recorded = dict(aws_env, MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(tmp_path / "requests.jsonl"))
    env = dict(_cli_env(aws_env, samples_dir, endpoint), MEDTRINITY_LEASE_TIMEOUT_S="20")
    run = [str(BIN / "medtrinity"), "run", "synthetic_dermoscopy", "--out", f"s3://{bucket}/runs", "--shard-size", "4"]
    with moto_server(port, tmp_path / "moto.log", recorded) as server:
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        first = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        for line in first.stderr:
            lines.append(line)
            if "[1/3] shard-00000 done" in line:
                server.kill()  # the store dies once the first shard is written
                server.wait()
                break
        lines.append(first.communicate(timeout=300)[1])
    stderr = "".join(lines)
    assert first.returncode == 2, stderr
    assert "Traceback" not in stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("medtrinity: error:")]
    assert stderr.rstrip().endswith(error)
    assert re.match(rf"medtrinity: error: S3 store s3://{bucket}/runs: (opening|reading|writing|looking up) ", error)
    assert f" failed: cannot reach endpoint {endpoint} (" in error, error

    with moto_server(port, tmp_path / "moto.log", recorded):
        replay = urllib.request.Request(f"{endpoint}/moto-api/recorder/replay-recording", method="POST")
        urllib.request.urlopen(replay, timeout=120).close()
        s3 = boto3.client("s3", endpoint_url=endpoint)
        prefix = "runs/sources/synthetic_dermoscopy"
        lease = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/lease.json")["Body"].read())
        assert lease["holder"]["pid"] == first.pid  # the dead run could not release it
        again = subprocess.run([*run, "--wait"], env=env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert "[1/3] shard-00000 skipped (finished earlier)" in again.stderr  # the first run's shard counts
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
        counts = manifest["counts"]
        assert counts["inputs"] == counts["used"] + counts["rejected"]
        assert counts["produced"] == counts["records"] + counts["quarantined"]
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/shards/")["Contents"]
        ids = [
            i
            for item in listed
            for i in pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()))[
                "id"
            ].to_pylist()
        ]
        assert len(ids) == len(set(ids)) == counts["records"] and len(listed) == len(manifest["shards"]) == 3
        lost = f"{prefix}/failures/{lease['run_id']}/run--1-killed.json"  # written by the rerun's plan
        assert json.loads(s3.get_object(Bucket=bucket, Key=lost)["Body"].read())["error_class"] == "RunLost"
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/lease.json")


# --------------------------------------------------------------------------------------------------
# Sources staged on S3


def test_source_staged_on_s3_runs_from_a_local_mirror_kept_in_step(
    s3, moto_endpoint, aws_env, samples_dir, tmp_path, monkeypatch
):
    import yaml

    from medtrinity_tasks.run.local import run_source
    from medtrinity_tasks.sources.samples.planar import BAD_DERMOSCOPY

    bucket = _new_bucket(s3)
    staged = samples_dir / "synthetic_dermoscopy"
    for path in sorted(p for p in staged.rglob("*") if p.is_file() and not p.is_symlink()):
        key = f"staged/dermoscopy/{path.relative_to(staged).as_posix()}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    s3.put_object(Bucket=bucket, Key="staged/dermoscopy-other/images/not_mine.jpg", Body=b"x")  # a sibling prefix
    entry = yaml.safe_load((CATALOG_DIR / "synthetic_dermoscopy.yaml").read_text())
    entry.update(id="site_dermoscopy_s3", location=f"s3://{bucket}/staged/dermoscopy")
    (catalog := tmp_path / "catalog").mkdir()
    (catalog / "site_dermoscopy_s3.yaml").write_text(yaml.safe_dump(entry))
    for key, value in {
        "MEDTRINITY_CATALOG_DIRS": str(catalog),
        "MEDTRINITY_CACHE_DIR": str(tmp_path / "cache"),
        "MEDTRINITY_S3_ENDPOINT_URL": moto_endpoint,
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_RUNNER": "inprocess",
    }.items():
        monkeypatch.setenv(key, value)

    counts = run_source("site_dermoscopy_s3", progress=lambda line: None)["counts"]
    local_files = sum(1 for p in staged.rglob("*") if p.is_file() and not p.is_symlink())
    assert counts["inputs"] == counts["used"] + counts["rejected"] and counts["records"] == 8
    mirror = tmp_path / "cache" / "sources" / "site_dermoscopy_s3"
    assert sum(1 for p in mirror.rglob("*") if p.is_file()) == local_files  # the sibling prefix is not mirrored
    assert counts["rejected"] == len(BAD_DERMOSCOPY)  # the broken files travel too, and are rejected as locally

    # the bucket changes: one image gone, one new; the next run's listing follows it
    s3.delete_object(Bucket=bucket, Key="staged/dermoscopy/images/synthetic_0000.jpg")
    s3.delete_object(Bucket=bucket, Key="staged/dermoscopy/masks/synthetic_0000_segmentation.png")
    again = run_source("site_dermoscopy_s3", progress=lambda line: None, force=True)["counts"]
    assert again["records"] == 7 and not (mirror / "images" / "synthetic_0000.jpg").exists()


def test_a_corpus_on_s3_is_indexed_from_its_mirror(s3, moto_endpoint, aws_env, tmp_path, monkeypatch):
    from medtrinity_tasks.knowledge.index import DEMO_CORPUS, index_corpus

    bucket = _new_bucket(s3)
    lines = DEMO_CORPUS.read_text().splitlines()[:20]
    s3.put_object(Bucket=bucket, Key="corpora/statpearls/part-0.jsonl", Body="\n".join(lines[:12]).encode())
    s3.put_object(Bucket=bucket, Key="corpora/statpearls/part-1.jsonl", Body="\n".join(lines[12:] + ["{x"]).encode())
    for key, value in {
        "MEDTRINITY_CACHE_DIR": str(tmp_path / "cache"),
        "MEDTRINITY_S3_ENDPOINT_URL": moto_endpoint,
        "MEDTRINITY_KNOWLEDGE_DIR": str(tmp_path / "store"),
    }.items():
        monkeypatch.setenv(key, value)
    result = index_corpus(f"s3://{bucket}/corpora/statpearls", "statpearls", load_settings())
    assert (result["indexed"], result["points_in_collection"]) == (20, 20)
    assert result["rejected_by_reason"] == {"malformed JSON line": 1}
    assert (tmp_path / "cache" / "knowledge" / "statpearls" / "part-1.jsonl").is_file()
