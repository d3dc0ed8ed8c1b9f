"""Sources served over DICOMweb (a PACS, Orthanc, dcm4chee): a local mirror that the plan's listing brings in
step with the server, so the DICOM series lister, the header allow-list, SEG pairing and accounting are the same
as for files.

Studies are searched with QIDO-RS (the entry's ``study_filters``), then the series of each study
(``series_filters``) and the instances of each series, every search paged with ``limit`` and ``offset``. A series
the mirror does not hold whole is retrieved with WADO-RS in its stored transfer syntax and only the instances the
mirror lacks are written; series and instances the server no longer lists are removed. Files are named by salted
pseudonyms of their UIDs (``<series pseudonym>/<instance pseudonym>.dcm``), so no UID, name or date is in a path,
and a series folder's name is the key its input has in the listing. A changed MEDTRINITY_DEID_SALT renames
everything, so the mirror is fetched again.

The client is ``dicomweb-client`` on a ``requests`` session: basic authentication or a bearer token from the
MEDTRINITY_DICOMWEB_* settings, and urllib3's retries with backoff on connection errors, time-outs and 5xx. The
client's own retrying is turned off: it gives up on a status with ``retrying.RetryError`` instead of the
response, and logs each failed attempt with its URL. The URLs and messages of the client, urllib3 and retrying
carry study, series and instance UIDs, so their loggers get a filter that blanks UIDs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import warnings
from pathlib import Path

from medtrinity_tasks.config import Settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.phi import clean_reason, project_logger, pseudonym
from medtrinity_tasks.sources.catalog import SourceEntry
from medtrinity_tasks.sources.deid import salt_for

log = project_logger(__name__)  # de-identified log lines

RETRIED_STATUSES = (408, 429, 500, 502, 503, 504)
"""Answers worth asking again: time-outs, rate limits and server errors (a 4xx else is the request's fault)."""
BACKOFF_S = 0.5
"""urllib3's backoff factor: retries wait 0, 1, 2, 4 ... seconds (at most two minutes), or as Retry-After says."""
STORED_SYNTAX = (("application/dicom", "*"),)
"""WADO-RS media type asking for instances as stored: compressed pixels stay compressed, for the readers to decode."""
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"
"""The DICOM JSON tags of the UIDs a QIDO-RS result is read for; nothing else in it is read."""
LIBRARY_LOGGERS = ("dicomweb_client.web", "urllib3.connectionpool", "urllib3.util.retry", "retrying")
"""Loggers that write request URLs or messages holding UIDs."""
UID = re.compile(r"(?<![\w.])[0-9]+(?:\.[0-9]+){2,}(?![\w.])")
"""A dotted UID; IPv4 addresses, which match too, are kept (``_without_uids``)."""
READ_ERRORS = (ValueError, EOFError, KeyError, TypeError, AttributeError)
"""What pydicom and the multipart decoder raise, besides pydicom's InvalidDicomError, on a retrieved part that is
a broken DICOM file or none."""


def mirror_dicomweb(source: SourceEntry, destination: Path, settings: Settings) -> tuple[dict[str, int], list[str]]:
    """Bring ``destination`` in step with the studies the source's DICOMweb server lists; returns what it did
    (studies and series listed, instances fetched, kept and removed, series that failed) and the pseudonyms of the
    series that could not be retrieved, which the listing accounts as rejects."""
    _blank_uids_in(LIBRARY_LOGGERS)
    server = DicomwebServer(source.location_uri(settings), settings, source.dicomweb.page_size)
    salt = salt_for(source, settings)
    destination.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.incoming-{os.getpid()}"
    done = {"studies": 0, "series": 0, "fetched": 0, "kept": 0, "removed": 0, "failed": 0}
    failed: list[str] = []
    listed: dict[str, set[str]] = {}  # series folder -> its instances' file names
    try:
        for study in server.uids("searching studies", server.client.search_for_studies, STUDY_UID,
                                 search_filters=source.dicomweb.study_filters):  # fmt: skip
            done["studies"] += 1
            for series in server.uids("searching the series of a study", server.client.search_for_series,
                                      SERIES_UID, study_instance_uid=study,
                                      search_filters=source.dicomweb.series_filters):  # fmt: skip
                done["series"] += 1
                folder = pseudonym(salt, series, "series")
                listed[folder] = _bring_series(server, (study, series), destination / folder, staging, salt, done)
                if done["failed"] > len(failed):
                    failed.append(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    done["removed"] = _prune(destination, listed)
    log.info("DICOMweb mirror of source %s: %s", source.id, done)
    return done, failed


class DicomwebServer:
    """A DICOMweb service through ``dicomweb-client``: paged QIDO-RS searches, WADO-RS retrieval, and every
    failure as a ``MedtrinityError`` that names the server and says what to do."""

    def __init__(self, url: str, settings: Settings, page_size: int):
        self.url, self.settings, self.page_size = url.rstrip("/"), settings, page_size
        self.client = self._client()

    def _client(self):
        import requests
        from dicomweb_client import DICOMwebClient
        from dicomweb_client.session_utils import create_session, create_session_from_user_pass
        from urllib3.util.retry import Retry

        user, password, token = (
            self.settings.dicomweb_username, self.settings.dicomweb_password, self.settings.dicomweb_token
        )  # fmt: skip
        if bool(user) != bool(password) or (token and user):
            raise MedtrinityError(
                "DICOMweb credentials: set MEDTRINITY_DICOMWEB_USERNAME and MEDTRINITY_DICOMWEB_PASSWORD together "
                "(basic authentication), or MEDTRINITY_DICOMWEB_TOKEN alone (a bearer token)"
            )
        session = create_session_from_user_pass(user, password) if user else create_session()
        retry = Retry(
            total=self.settings.dicomweb_retries, backoff_factor=BACKOFF_S, status_forcelist=RETRIED_STATUSES,
            allowed_methods=frozenset({"GET"}), raise_on_status=False,
        )  # fmt: skip
        for scheme in ("http://", "https://"):
            session.mount(scheme, requests.adapters.HTTPAdapter(max_retries=retry))
        try:
            client = DICOMwebClient(
                self.url, session=session, headers={"Authorization": f"Bearer {token}"} if token else None,
                timeout=self.settings.dicomweb_timeout_s, permissive_uid=True,
            )  # fmt: skip
        except ValueError as exc:
            raise MedtrinityError(f"DICOMweb location {self.url!r} is not a base URL the client takes: {exc}") from None
        client.set_http_retry_params(retry=False)
        return client

    def uids(self, doing: str, search, tag: str, **query):
        """The ``tag`` UID of every result of a QIDO-RS search, page after page until a short page."""
        offset, seen = 0, set()
        while True:
            try:
                with self.asking(doing):
                    page = search(limit=self.page_size, offset=offset, **query)
            except ValueError as exc:  # the client refuses a UID the server gave: one with "/" or "@" in it
                log.warning("DICOMweb server at %s: %s skipped (%s)", self.url, doing, _cause(exc))
                return
            new = [uid for uid in dict.fromkeys(_uid(result, tag) for result in page) if uid and uid not in seen]
            yield from new
            seen.update(new)
            if len(page) < self.page_size:
                return
            if not new:  # a server that ignores offset would answer the same page forever
                log.warning("DICOMweb server at %s repeats a page while %s; set a larger page_size", self.url, doing)
                return
            offset += len(page)

    def instances(self, study: str, series: str):
        """The series' instances as pydicom datasets, streamed in their stored transfer syntax."""
        return self.client.iter_series(study, series, media_types=STORED_SYNTAX)

    @contextlib.contextmanager
    def asking(self, doing: str):
        """Requests inside the block fail with what went wrong and what to do, never with a URL (it holds UIDs)."""
        import requests

        try:
            yield
        except requests.HTTPError as exc:
            raise self._refusal(exc.response, doing) from None
        except requests.ConnectionError as exc:
            raise MedtrinityError(
                f"DICOMweb server at {self.url} is unreachable: {_cause(exc)}; check the source's location and "
                "that the server runs"
            ) from None
        except requests.Timeout:
            raise MedtrinityError(
                f"DICOMweb server at {self.url} did not answer {doing} within {self.settings.dicomweb_timeout_s:g} s "
                f"after {self.settings.dicomweb_retries} retries (MEDTRINITY_DICOMWEB_TIMEOUT_S, _RETRIES)"
            ) from None
        except requests.RequestException as exc:
            raise MedtrinityError(f"DICOMweb server at {self.url}: {doing} failed: {_cause(exc)}") from None

    def _refusal(self, response, doing: str) -> MedtrinityError:
        status = f"{response.status_code} {response.reason or ''}".strip()
        if response.status_code in (401, 403):
            return MedtrinityError(f"DICOMweb server at {self.url} refused {doing} ({status}): {self._credentials()}")
        hint = ": check that the location is the server's DICOMweb base URL" if response.status_code == 404 else ""
        return MedtrinityError(f"DICOMweb server at {self.url} answered {doing} with {status}{hint}")

    def _credentials(self) -> str:
        """Which setting to set or check, by what was sent."""
        if self.settings.dicomweb_token:
            return "check the bearer token in MEDTRINITY_DICOMWEB_TOKEN (and that it may read this server)"
        if self.settings.dicomweb_username:
            return (
                "check the user name and password in MEDTRINITY_DICOMWEB_USERNAME and MEDTRINITY_DICOMWEB_PASSWORD "
                "(and that the user may read this server)"
            )
        return (
            "it asks for credentials: set MEDTRINITY_DICOMWEB_USERNAME and MEDTRINITY_DICOMWEB_PASSWORD (basic "
            "authentication) or MEDTRINITY_DICOMWEB_TOKEN (a bearer token)"
        )


def _bring_series(
    server: DicomwebServer, uids: tuple[str, str], folder: Path, staging: Path, salt: str, done: dict[str, int]
) -> set[str]:
    """Retrieve the series into ``folder`` unless it holds every instance the server lists; returns their file
    names. New instances are written to ``staging`` and moved in once the whole series has come, so a listing never
    sees a series half retrieved; a series whose answer is no DICOM is left as it was, and counted as failed."""
    from pydicom.errors import InvalidDicomError

    study, series = uids
    names = {
        f"{pseudonym(salt, uid, 'instance')}.dcm": uid
        for uid in server.uids("searching the instances of a series", server.client.search_for_instances, SOP_UID,
                               study_instance_uid=study, series_instance_uid=series)
    }  # fmt: skip
    held = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    missing = {uid: name for name, uid in names.items() if name not in held}
    done["kept"] += len(names) - len(missing)
    if not missing:
        return set(names)
    staged = []
    try:
        with server.asking("retrieving a series"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings quote values, UIDs among them
            for dataset in server.instances(study, series):
                name = missing.get(str(dataset.get("SOPInstanceUID", "")))
                if name:
                    staging.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(_as_received(dataset))
                    staged.append(name)
    except (InvalidDicomError, *READ_ERRORS) as exc:
        done["failed"] += 1
        log.warning("DICOMweb series %s could not be retrieved (%s); left as it was", folder.name, _cause(exc))
        for name in staged:
            (staging / name).unlink(missing_ok=True)
        return set(names) & held
    folder.mkdir(parents=True, exist_ok=True)
    for name in staged:
        os.replace(staging / name, folder / name)  # atomic: a reader sees a whole file or none
    done["fetched"] += len(staged)
    return set(names)


def _as_received(dataset) -> bytes:
    """The bytes the server sent for an instance: the buffer pydicom parsed it from. Writing the dataset back
    through pydicom would not give the stored file (it drops group lengths and gives UN elements their VR)."""
    dataset.buffer.seek(0)
    return dataset.buffer.read()


def _prune(destination: Path, listed: dict[str, set[str]]) -> int:
    """Remove series and instances the server no longer lists, and anything else in the mirror; returns how many
    files went."""
    removed = 0
    for entry in destination.iterdir():
        keep = listed.get(entry.name) if entry.is_dir() and not entry.is_symlink() else None
        if keep is None:
            removed += sum(1 for path in entry.rglob("*") if not path.is_dir()) if entry.is_dir() else 1
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            continue
        for path in entry.iterdir():
            if path.name not in keep:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
                removed += 1
    return removed


def _uid(result, tag: str) -> str | None:
    """A UID from one DICOM JSON result, or None where the server left it out."""
    try:
        value = result[tag]["Value"][0]
    except (KeyError, IndexError, TypeError):
        return None
    return value if isinstance(value, str) and value else None


def _without_uids(text: str) -> str:
    """``text`` with every dotted UID replaced by "[UID]" (IPv4 addresses, which look alike, are kept)."""

    def blank(match: re.Match) -> str:
        parts = match.group().split(".")
        return match.group() if len(parts) == 4 and all(int(part) < 256 for part in parts) else "[UID]"

    return UID.sub(blank, text)


def _cause(exc: BaseException) -> str:
    """What went wrong underneath a client error (urllib3's reason inside requests' wrapping), without UIDs."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    cause = reason if isinstance(reason, BaseException) else exc
    return clean_reason(_without_uids(f"{type(cause).__name__}: {cause}"))


class UidFilter(logging.Filter):
    """Log records of a library with every UID blanked, arguments merged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _without_uids(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _blank_uids_in(names: tuple[str, ...]) -> None:
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, UidFilter) for f in logger.filters):
            logger.addFilter(UidFilter())
