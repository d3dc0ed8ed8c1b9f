"""Stores: keys to bytes, behind one interface, for a local directory and for S3 (boto3).

``open_store`` picks by URI: ``s3://bucket/prefix`` is S3 (``MEDTRINITY_S3_ENDPOINT_URL`` points at a
server other than AWS), ``file://path`` or a plain path is a local directory.

Every operation that fails in the store itself (unreachable endpoint, refused credentials, full disk)
raises ``StoreUnavailable`` with one line naming the store and the operation; the underlying error is
its ``__cause__`` and its traceback goes to the debug log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from medtrinity_tasks.config import Settings, load_settings
from medtrinity_tasks.errors import StoreUnavailable
from medtrinity_tasks.phi import project_logger

log = project_logger(__name__)  # de-identified log lines
LOCK_STALE_S = 30.0
"""A local lock file older than this was left by a process that died while holding it (it is held
for one read and one write of a small file)."""
CREDENTIALS_HELP = (
    "boto3 takes them from its usual chain: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN "
    "for temporary ones), AWS_PROFILE naming a profile in ~/.aws, or the instance's or pod's role"
)
REFUSED_CREDENTIALS = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired",
    "AuthorizationHeaderMalformed", "InvalidClientTokenId",
}  # fmt: skip
MISSING_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


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

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes at ``key`` and a version token for ``write_if`` and ``delete_if``; None if absent."""
        raise NotImplementedError

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write ``data`` only if ``key`` is absent (``version`` None) or still holds ``version``;
        False when another writer got there first. Leases are built on this."""
        raise NotImplementedError

    def delete_if(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it still holds ``version``."""
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

    @contextlib.contextmanager
    def _operation(self, operation: str):
        """Turn an OSError (disk full, permission, a folder in the way) into one line naming the store."""
        try:
            yield
        except OSError as exc:
            log.debug("local store %s: %s failed", self.uri, operation, exc_info=True)
            why = exc.strerror or str(exc) or "error"
            raise StoreUnavailable(f"local store {self.uri}: {operation} failed: {why} ({type(exc).__name__})") from exc

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=".tmp-") as tmp:
            tmp.write(data)
        try:
            os.replace(tmp.name, path)  # readers never see half a shard
        except OSError:
            os.unlink(tmp.name)
            raise

    def write_bytes(self, key: str, data: bytes) -> str:
        with self._operation(f"writing {key}"):
            self._write(self.root / key, data)
        return str(self.root / key)

    def read_bytes(self, key: str) -> bytes:
        with self._operation(f"reading {key}"):
            return (self.root / key).read_bytes()

    def exists(self, key: str) -> bool:
        with self._operation(f"looking up {key}"):
            return (self.root / key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        with self._operation(f"listing {prefix or '/'}"):
            if not base.is_dir():
                return []
            return sorted(
                str(p.relative_to(self.root))
                for p in base.rglob("*")
                if p.is_file() and not p.name.startswith((".tmp-", ".lock-"))
            )

    def delete(self, key: str) -> None:
        with self._operation(f"deleting {key}"):
            (self.root / key).unlink(missing_ok=True)

    def key_uri(self, key: str) -> str:
        return str(self.root / key)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        with self._operation(f"reading {key}"):
            try:
                data = (self.root / key).read_bytes()
            except FileNotFoundError:
                return None
        return data, hashlib.sha256(data).hexdigest()

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        with self._operation(f"writing {key}"), self._locked(key):
            if self._version(key) != version:
                return False
            self._write(self.root / key, data)
            return True

    def delete_if(self, key: str, version: str) -> bool:
        with self._operation(f"deleting {key}"), self._locked(key):
            if self._version(key) != version:
                return False
            (self.root / key).unlink()
            return True

    def _version(self, key: str) -> str | None:
        current = self.read_versioned(key)
        return current[1] if current else None

    @contextlib.contextmanager
    def _locked(self, key: str):
        """Hold ``.lock-<name>`` beside ``key`` while a conditional write compares and writes. It is
        created with O_CREAT | O_EXCL, which is atomic on local disks and on NFS; one left by a process
        that died holding it is broken after LOCK_STALE_S."""
        path = self.root / key
        lock = path.with_name(f".lock-{path.name}")
        lock.parent.mkdir(parents=True, exist_ok=True)
        give_up = time.monotonic() + LOCK_STALE_S + 5
        while True:
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - lock.stat().st_mtime > LOCK_STALE_S:
                        lock.unlink(missing_ok=True)
                if time.monotonic() > give_up:
                    raise StoreUnavailable(f"local store {self.uri}: {lock} stays locked; remove it") from None
                time.sleep(0.01)
        try:
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            os.close(fd)
            yield
        finally:
            lock.unlink(missing_ok=True)


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
        with self._operation("opening"):
            probe.head_bucket(Bucket=self.bucket)

    @contextlib.contextmanager
    def _operation(self, operation: str):
        """Every S3 call runs inside this: a botocore or boto3 error leaves it as one ``StoreUnavailable``."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            log.debug("S3 store %s: %s failed", self.uri, operation, exc_info=True)
            raise StoreUnavailable(f"S3 store {self.uri}: {operation} failed: {self._why(exc)}") from exc

    def _why(self, exc: Exception) -> str:
        """What went wrong, in words a person can act on."""
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

        exc = getattr(exc, "last_exception", None) or exc  # boto3's transfer manager wraps the last attempt's error
        name = type(exc).__name__
        endpoint = self.endpoint_url or "AWS S3"
        if isinstance(exc, ConnectionError | HTTPClientError):
            return f"cannot reach endpoint {endpoint} ({name}); start it or set MEDTRINITY_S3_ENDPOINT_URL"
        if name in MISSING_CREDENTIALS:
            return f"no AWS credentials were found ({name}); {CREDENTIALS_HELP}"
        if not isinstance(exc, ClientError):
            return f"{name}: {exc}"
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if code in REFUSED_CREDENTIALS:
            return f"the credentials were refused ({code}: {message}); check them: {CREDENTIALS_HELP}"
        if code in ("AccessDenied", "403"):  # a HEAD's 403 has no body to tell refused keys from missing rights
            return (
                f"access denied ({code}): the credentials are not valid here or lack permission on bucket "
                f"{self.bucket!r}; {CREDENTIALS_HELP}"
            )
        if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
            return f"bucket {self.bucket!r} does not exist at S3 endpoint {endpoint}"
        return f"{code or name}: {message or exc}"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @staticmethod
    def _code(exc) -> str:
        return exc.response.get("Error", {}).get("Code", "")

    def write_bytes(self, key: str, data: bytes) -> str:
        with self._operation(f"writing {key}"):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.key_uri(key)

    def read_bytes(self, key: str) -> bytes:
        with self._operation(f"reading {key}"):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        with self._operation(f"looking up {key}"):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._key(key))
                return True
            except ClientError as exc:
                if self._code(exc) in NOT_FOUND:
                    return False
                raise

    def list(self, prefix: str) -> list[str]:
        keys = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        folder = self._key(prefix.rstrip("/") + "/") if prefix.strip("/") else self._key("")
        with self._operation(f"listing {prefix or '/'}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                keys += [item["Key"][strip:] for item in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, key: str) -> None:
        with self._operation(f"deleting {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        with self._operation(f"reading {key}"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if self._code(exc) in NOT_FOUND:
                    return None
                raise
            return answer["Body"].read(), answer["ETag"]

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """A conditional PUT: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace; S3 answers
        412 PreconditionFailed (or 409 ConditionalRequestConflict during a concurrent write) when the
        condition does not hold."""
        from botocore.exceptions import ClientError

        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with self._operation(f"writing {key}"):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
                return True
            except ClientError as exc:
                if self._code(exc) in CONDITION_FAILED or (version is not None and self._code(exc) in NOT_FOUND):
                    return False
                raise

    def delete_if(self, key: str, version: str) -> bool:
        from botocore.exceptions import ClientError

        with self._operation(f"deleting {key}"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(key), IfMatch=version)
                return True
            except ClientError as exc:
                if self._code(exc) in CONDITION_FAILED | NOT_FOUND:
                    return False
                raise

    def objects(self):
        """(key below the prefix, size, last-modified datetime) of every object under the prefix."""
        strip = len(self.prefix) + 1 if self.prefix else 0
        folder = f"{self.prefix}/" if self.prefix else ""
        with self._operation("listing objects"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder):
                for item in page.get("Contents", []):
                    yield item["Key"][strip:], item["Size"], item["LastModified"]

    def download(self, key: str, path: Path) -> None:
        with self._operation(f"downloading {key}"):
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
