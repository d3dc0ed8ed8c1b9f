"""A PACS as a source: Debian's Orthanc with its DICOMweb plugin on loopback, loaded with real DICOM files (the
files of pydicom's tests and pydicom-data, and the sample DICOM source), listed with QIDO-RS, retrieved with
WADO-RS into the source's mirror and run through the pipeline as the same files staged as a ``series`` source."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import shutil
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest
import yaml

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.sources.catalog import get_source
from medtrinity_tasks.sources.dicomweb import mirror_dicomweb
from medtrinity_tasks.sources.layouts import list_inputs
from tests.support.servers import ORTHANC_USER, free_port, start_orthanc

REAL_FILES = (
    "CT_small.dcm", "693_J2KR.dcm", "explicit_VR-UN.dcm", "MR_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "emri_small.dcm", "RG1_UNCR.dcm", "US1_UNCR.dcm", "OBXXXX1A_rle.dcm", "color3d_jpeg_baseline.dcm",
    "gdcm-US-ALOKA-16.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "liver.dcm", "rtdose.dcm", "reportsi.dcm",
)  # fmt: skip
"""Real files of pydicom's tests and pydicom-data, each a study, series and instance of its own: CT (plain and
JPEG 2000), MR (single and multi-frame), a chest radiograph, ultrasound (cine, RLE palette, implicit VR), NM,
a secondary capture (RLE), a liver SEG whose CT is not here, an RT dose and a structured report."""
SALT = "dicomweb-tests"
SAMPLE_LABELS = {
    1: {"name": "liver", "kind": "organ"},
    2: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"},
    3: {"name": "spleen", "kind": "organ"},
    4: {"name": "kidney", "kind": "organ"},
    5: {"name": "renal cyst", "kind": "lesion", "organ": "kidney", "disease": "renal cyst"},
}


def real_files(samples_dir: Path) -> dict[str, Path]:
    """The files the server and the ``series`` source hold, by their place in the staged tree: the pydicom files
    and the sample source's annotated CT series with their SEGs (not its broken files)."""
    from pydicom.data import get_testdata_file

    files = {f"pydicom/{name}": Path(get_testdata_file(name)) for name in REAL_FILES}
    samples = samples_dir / "synthetic_ct_dicom"
    for path in sorted(samples.rglob("*.dcm")):
        if "bad" not in path.relative_to(samples).parts:
            files[f"samples/{path.relative_to(samples).as_posix()}"] = path
    return files


def identifiers(files) -> set[str]:
    """Every file's study, series and instance UID and its patient's name."""
    found = set()
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {str(ds.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
        found |= {str(ds.PatientName)} if "^" in str(ds.get("PatientName", "")) else set()
    return {value for value in found if len(value.strip("^")) > 3}


def sha256s(paths) -> list[str]:
    return sorted(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths)


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, samples_dir):
    """One Orthanc for the tests that only read it, holding every real file."""
    files = real_files(samples_dir)
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as orthanc:
        assert orthanc.upload(files.values()) == len(files)  # each file an instance of its own, none refused
        yield orthanc, files


@pytest.fixture
def site(settings_env, tmp_path, monkeypatch):
    """A site's settings: its own catalog, cache, salt and the PACS user, runs in process."""
    env = {
        "MEDTRINITY_CATALOG_DIRS": str(tmp_path / "catalog"),
        "MEDTRINITY_CACHE_DIR": str(tmp_path / "cache"),
        "MEDTRINITY_DEID_SALT": SALT,
        "MEDTRINITY_DICOMWEB_USERNAME": ORTHANC_USER[0],
        "MEDTRINITY_DICOMWEB_PASSWORD": ORTHANC_USER[1],
        "MEDTRINITY_DICOMWEB_RETRIES": "1",
        "MEDTRINITY_RUNNER": "inprocess",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "catalog").mkdir()
    return tmp_path


def write_entry(site: Path, source_id: str, location: str, **options) -> None:
    layout = "dicomweb" if location.startswith("http") else "series"
    entry = {
        "id": source_id, "name": f"{source_id} (tests)", "homepage": None, "licence": "MIT, CC0-1.0",
        "modality": "CT", "body_region": "abdomen", "format": "dicom", "layout": layout, "location": location,
        "labels": SAMPLE_LABELS, "min_pass_rate": 0.0, **options,
    }  # fmt: skip
    (site / "catalog" / f"{source_id}.yaml").write_text(yaml.safe_dump(entry))


def mirror_of(source_id: str) -> tuple[dict, Path]:
    """Bring the source's mirror in step; returns the summary and the mirror's folder."""
    settings = load_settings()
    source = get_source(source_id, settings)
    summary, failed = mirror_dicomweb(source, source.location_path(settings), settings)
    assert failed == []
    return summary, source.location_path(settings)


def test_a_pacs_source_yields_the_records_of_the_same_files(pacs, site, caplog, capsys):
    from medtrinity_tasks.run.local import run_source

    orthanc, files = pacs
    write_entry(site, "pacs", orthanc.dicomweb)
    write_entry(site, "pacs_files", "${MEDTRINITY_DATA_DIR}/pacs_files")
    for relpath, path in files.items():
        (site / "pacs_files" / relpath).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, site / "pacs_files" / relpath)
    caplog.set_level(logging.DEBUG)

    over_dicomweb = run_source("pacs")
    from_files = run_source("pacs_files")
    mirror = site / "cache" / "sources" / "pacs"
    assert sha256s(p for p in mirror.rglob("*") if p.is_file()) == sha256s(files.values())  # as stored, byte for byte
    assert over_dicomweb["counts"]["records"] > 0
    for part in ("counts", "files", "rejected_by_reason", "quarantined_by_reason"):
        assert over_dicomweb[part] == from_files[part], part

    texts = {"logs": caplog.text, "output": "".join(capsys.readouterr())}
    texts |= {f"mirror path {p}": str(p.relative_to(site)) for p in mirror.rglob("*")}
    for path in (site / "out" / "sources" / "pacs").rglob("*"):
        if path.suffix == ".parquet":
            texts[str(path)] = json.dumps(pq.read_table(path).drop_columns(["image"]).to_pylist(), default=str)
        elif path.is_file():
            texts[str(path)] = path.read_text(errors="replace")
    for secret in identifiers(files.values()):
        for where, text in texts.items():
            assert secret not in text, f"{secret!r} in {where}"


def test_paging_lists_every_study_a_page_at_a_time(pacs, site):
    orthanc, files = pacs
    write_entry(site, "pacs_paged", orthanc.dicomweb, dicomweb={"page_size": 1})
    done, mirror = mirror_of("pacs_paged")
    studies = {str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in files.values()}
    series = {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in files.values()}
    assert (done["studies"], done["series"], done["fetched"]) == (len(studies), len(series), len(files))
    assert len(studies) > 2 and len(list(mirror.iterdir())) == len(series)


def test_filters_keep_the_series_and_studies_asked_for(pacs, site):
    orthanc, files = pacs
    modalities = {p: str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in files.values()}
    write_entry(site, "pacs_mr", orthanc.dicomweb, dicomweb={"series_filters": {"Modality": "MR"}})
    write_entry(site, "pacs_cr", orthanc.dicomweb, dicomweb={"study_filters": {"ModalitiesInStudy": "CR"}})
    done, mirror = mirror_of("pacs_mr")
    mirrored = [str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in mirror.rglob("*.dcm")]
    assert mirrored == ["MR"] * sum(m == "MR" for m in modalities.values()) and len(mirrored) == 3
    assert done["series"] == 3 and done["studies"] == len(REAL_FILES) + 3  # every study searched, its MR series kept

    done, mirror = mirror_of("pacs_cr")
    assert done["studies"] == 1 and sha256s(mirror.rglob("*.dcm")) == sha256s([files["pydicom/RG1_UNCR.dcm"]])


def test_the_mirror_follows_the_server(site, samples_dir, tmp_path):
    """A second listing fetches nothing; a series deleted on the server leaves the mirror and the listing."""
    files = [path for relpath, path in real_files(samples_dir).items() if relpath.startswith("pydicom/")][:4]
    with start_orthanc(tmp_path / "orthanc") as orthanc:
        assert orthanc.upload(files) == 4
        write_entry(site, "pacs_live", orthanc.dicomweb)
        first, mirror = mirror_of("pacs_live")
        again, _ = mirror_of("pacs_live")
        assert (first["fetched"], first["kept"], again["fetched"], again["kept"], again["removed"]) == (4, 0, 0, 4, 0)

        gone = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        orthanc.delete_series(gone)
        settings = load_settings()
        inputs = list_inputs(get_source("pacs_live", settings), settings)
    from medtrinity_tasks.phi import pseudonym

    assert not (mirror / pseudonym(SALT, gone, "series")).exists() and len(list(mirror.iterdir())) == 3
    assert sha256s(mirror.rglob("*.dcm")) == sha256s(files[1:])
    assert pseudonym(SALT, gone, "series") not in {item["source_relpath"] for item in inputs} and len(inputs) == 3


def test_credentials_the_server_refuses_name_the_setting(pacs, site, monkeypatch):
    orthanc, _ = pacs
    write_entry(site, "pacs_locked", orthanc.dicomweb)
    monkeypatch.setenv("MEDTRINITY_DICOMWEB_PASSWORD", "not-the-password")
    with pytest.raises(MedtrinityError, match=r"refused searching studies \(401.*MEDTRINITY_DICOMWEB_PASSWORD"):
        mirror_of("pacs_locked")
    monkeypatch.delenv("MEDTRINITY_DICOMWEB_USERNAME")
    monkeypatch.delenv("MEDTRINITY_DICOMWEB_PASSWORD")
    with pytest.raises(MedtrinityError, match="asks for credentials: set MEDTRINITY_DICOMWEB_USERNAME"):
        mirror_of("pacs_locked")
    monkeypatch.setenv("MEDTRINITY_DICOMWEB_TOKEN", "a-token-it-does-not-know")
    with pytest.raises(MedtrinityError, match="check the bearer token in MEDTRINITY_DICOMWEB_TOKEN"):
        mirror_of("pacs_locked")
    assert list((site / "cache" / "sources" / "pacs_locked").iterdir()) == []


def test_an_unreachable_server_is_a_clear_error(site):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    write_entry(site, "pacs_down", url)
    settings = load_settings()
    with pytest.raises(MedtrinityError) as raised:
        list_inputs(get_source("pacs_down", settings), settings)
    message = str(raised.value)
    assert message.startswith(f"DICOMweb server at {url} is unreachable: ")
    assert "Connection refused" in message and message.endswith("check the source's location and that the server runs")


class FlakyStudies(http.server.BaseHTTPRequestHandler):
    """A DICOMweb study search that answers 503 to the first ``failures`` requests, then no studies."""

    failures = 0
    requests: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).requests.append(self.path)
        failing = len(type(self).requests) <= type(self).failures
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/dicom+json")
        body = b"" if failing else b"[]"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("failures", "retries", "outcome"), [(2, 2, "mirrored"), (2, 1, "503")])
def test_server_errors_are_retried_with_backoff(site, monkeypatch, failures, retries, outcome):
    FlakyStudies.failures, FlakyStudies.requests = failures, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyStudies)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("MEDTRINITY_DICOMWEB_RETRIES", str(retries))
    write_entry(site, "pacs_flaky", f"http://127.0.0.1:{server.server_address[1]}/dicom-web")
    try:
        if outcome == "mirrored":
            done, _ = mirror_of("pacs_flaky")
            assert done["studies"] == 0
        else:
            with pytest.raises(MedtrinityError, match="answered searching studies with 503 Service Unavailable"):
                mirror_of("pacs_flaky")
    finally:
        server.shutdown()
    assert len(FlakyStudies.requests) == retries + 1
