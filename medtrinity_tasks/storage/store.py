"""Stores: keys to bytes, behind one interface, for a local directory and for S3 (boto3).

``open_store`` picks by URI: ``s3://bucket/prefix`` is S3 (``MEDTRINITY_S3_ENDPOINT_URL`` points at a
server other than AWS), ``file://path`` or a plain path is a local directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import StoreUnavailable


class Store:
    uri: str

    def write_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically and return its URI."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def key_uri(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def write_json(self, key: str, value) -> str:
        return self.write_bytes(key, json.dumps(value, indent=2, sort_keys=True).encode())

    def read_json(self, key: str):
        return json.loads(self.read_bytes(key))


class LocalStore(Store):
    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()
        self.uri = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create output directory {self.root}: {exc.strerror}") from None

    def write_bytes(self, key: str, data: bytes) -> str:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)  # readers never see half a shard
        return str(path)

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def key_uri(self, key: str) -> str:
        return str(self.root / key)


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        retries = {"total_max_attempts": 3, "mode": "standard"}
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, config=Config(retries=retries, connect_timeout=5, read_timeout=60)
        )
        # A short-fused client for the reachability check: a dead or silent endpoint is reported in
        # seconds, while transfers keep the patient client.
        probe = boto3.client(
            "s3", endpoint_url=endpoint_url,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=3, read_timeout=5),
        )  # fmt: skip
        self._check_reachable(probe)

    def _check_reachable(self, probe) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"S3 endpoint {self.endpoint_url or 'AWS'}"
        try:
            probe.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchBucket"):
                raise StoreUnavailable(f"bucket {self.bucket!r} does not exist at {where}") from None
            raise StoreUnavailable(f"cannot use bucket {self.bucket!r} at {where}: {code or exc}") from None
        except BotoCoreError as exc:
            raise StoreUnavailable(
                f"cannot reach {where} ({type(exc).__name__}); start it or set MEDTRINITY_S3_ENDPOINT_URL"
            ) from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def write_bytes(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.key_uri(key)

    def read_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def list(self, prefix: str) -> list[str]:
        keys = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        folder = self._key(prefix.rstrip("/") + "/") if prefix.strip("/") else self._key("")
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
            keys += [item["Key"][strip:] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def objects(self):
        """(key below the prefix, size, last-modified datetime) of every object under the prefix."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        folder = f"{self.prefix}/" if self.prefix else ""
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
            for item in page.get("Contents", []):
                yield item["Key"][strip:], item["Size"], item["LastModified"]

    def download(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self._key(key), str(path))


def open_store(uri: str, settings: Settings | None = None) -> Store:
    settings = settings or load_settings()
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StoreUnavailable(f"{uri!r} names no bucket; use s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path, endpoint_url=settings.s3_endpoint_url)
    if parsed.scheme == "file":
        return LocalStore(parsed.netloc + parsed.path)  # file://relative/path puts "relative" in netloc
    if parsed.scheme and len(parsed.scheme) > 1:
        raise StoreUnavailable(f"unsupported output URI {uri!r}: use a path, file://path or s3://bucket/prefix")
    return LocalStore(uri)
