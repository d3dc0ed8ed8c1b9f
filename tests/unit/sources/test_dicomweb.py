"""The DICOMweb mirror's own logic: UIDs kept out of library log lines and messages, paged searches, pruning and the
credential settings. The mirror against a real server is tested in tests/integration/test_dicomweb.py."""

from __future__ import annotations

import logging

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.dicomweb import DicomwebServer, UidFilter, _cause, _prune, _uid, _without_uids

STUDY = "1.2.840.113619.2.55.3.604688119.868.1249343483.504"
URL = "http://127.0.0.1:9/dicom-web"


def server(page_size: int = 2, **env: str) -> DicomwebServer:
    return DicomwebServer(URL, load_settings({"MEDTRINITY_SAMPLES_DIR": "/tmp", **env}), page_size)


def test_uids_are_blanked_and_addresses_and_numbers_kept():
    text = f'GET /dicom-web/studies/{STUDY}/series?limit=2 from 127.0.0.1:8042 "2.25.3298007356985866292956" 0.5 s'
    assert _without_uids(text) == 'GET /dicom-web/studies/[UID]/series?limit=2 from 127.0.0.1:8042 "[UID]" 0.5 s'
    assert _without_uids("version 1.2, 3.14159 and 10.0.0.300") == "version 1.2, 3.14159 and [UID]"


def test_library_log_records_lose_their_uids():
    record = logging.LogRecord("dicomweb_client.web", logging.INFO, "web.py", 1, 'retrieve series "%s"', (STUDY,), None)
    assert UidFilter().filter(record) and record.getMessage() == 'retrieve series "[UID]"'


def test_a_client_error_says_what_went_wrong_underneath_without_uids():
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    refused = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    wrapped = requests.ConnectionError(MaxRetryError(None, f"/dicom-web/studies/{STUDY}/series", refused))
    cause = _cause(wrapped)
    assert cause.startswith("NewConnectionError: ") and cause.endswith("[Errno 111] Connection refused")
    assert STUDY not in _cause(ValueError(f"UID {STUDY!r} must match")) and "[UID]" in _cause(ValueError(STUDY))


@pytest.mark.parametrize(
    ("result", "uid"),
    [
        ({"0020000D": {"vr": "UI", "Value": [STUDY]}}, STUDY),
        ({"0020000D": {"vr": "UI"}}, None),  # left out by the server
        ({"0020000D": {"vr": "UI", "Value": []}}, None),
        ({"0020000D": {"vr": "UI", "Value": [7]}}, None),
        ({}, None),
        ("not a dataset", None),
    ],
)
def test_a_uid_is_read_from_dicom_json_or_not_at_all(result, uid):
    assert _uid(result, "0020000D") == uid


def pages_of(results: list, ignores_offset: bool = False):
    """A QIDO-RS search over ``results`` as a server answers it; records each (limit, offset) asked."""
    asked = []

    def search(limit, offset, **query):
        asked.append((limit, offset))
        start = 0 if ignores_offset else offset
        return [{"0020000D": {"vr": "UI", "Value": [uid]}} for uid in results[start : start + limit]]

    return search, asked


@pytest.mark.parametrize(("count", "pages"), [(0, 1), (1, 1), (2, 2), (5, 3)])
def test_searches_are_paged_until_a_short_page(count, pages):
    uids = [f"1.2.3.{n}" for n in range(count)]
    search, asked = pages_of(uids)
    assert list(server(page_size=2).uids("searching studies", search, "0020000D")) == uids
    assert asked == [(2, 2 * n) for n in range(pages)]


def test_a_server_that_ignores_offset_ends_the_search_with_a_warning(caplog):
    search, asked = pages_of(["1.2.3.1", "1.2.3.2", "1.2.3.3"], ignores_offset=True)
    assert list(server(page_size=2).uids("searching studies", search, "0020000D")) == ["1.2.3.1", "1.2.3.2"]
    assert asked == [(2, 0), (2, 2)] and "repeats a page while searching studies" in caplog.text


def test_a_uid_the_client_refuses_skips_that_search_without_naming_it(caplog):
    def search(limit, offset, **query):
        raise ValueError(f"Permissive mode is enabled. UID '{STUDY}/x' must match regex")

    assert list(server().uids("searching the series of a study", search, "0020000E")) == []
    assert "searching the series of a study skipped (ValueError" in caplog.text and STUDY not in caplog.text


def test_the_mirror_keeps_only_what_the_server_lists(tmp_path):
    for relpath in ("series-a/instance-1.dcm", "series-a/instance-2.dcm", "series-b/instance-3.dcm", "stray.txt"):
        (tmp_path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relpath).write_bytes(b"x")
    (tmp_path / "series-a" / "nested").mkdir()
    assert _prune(tmp_path, {"series-a": {"instance-2.dcm"}}) == 4
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "series-a", "series-a/instance-2.dcm"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "env",
    [
        {"MEDTRINITY_DICOMWEB_USERNAME": "site"},
        {"MEDTRINITY_DICOMWEB_PASSWORD": "secret"},
        {"MEDTRINITY_DICOMWEB_USERNAME": "site", "MEDTRINITY_DICOMWEB_PASSWORD": "s", "MEDTRINITY_DICOMWEB_TOKEN": "t"},
    ],
)
def test_credentials_come_as_a_user_and_password_or_a_token(env):
    with pytest.raises(MedtrinityError, match="USERNAME and MEDTRINITY_DICOMWEB_PASSWORD together .*TOKEN alone"):
        server(**env)
