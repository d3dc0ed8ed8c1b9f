"""The dataset browser's pages and ROI overlays over a real output store. Airflow's login in front of
it is tested against `airflow standalone` in a real browser (tests/test_airflow_standalone.py); here
the app's auth dependency is replaced, and only its refusal without a token is checked."""

import io
import re

import numpy as np
import pytest
from PIL import Image

from medtrinity_tasks.browser import views
from medtrinity_tasks.roi import rle
from medtrinity_tasks.roi.overlay import roi_colour
from medtrinity_tasks.storage import LocalStore
from medtrinity_tasks.storage.shards import failure_key
from tests.support.servers import airflow_in_process


@pytest.fixture
def published(settings_env, monkeypatch):
    """Two sample sources published in small shards: boxes with one quarantined record (radiographs)
    and masks (dermoscopy)."""
    from medtrinity_tasks.run.local import run_source

    monkeypatch.setenv("MEDTRINITY_RUNNER", "inprocess")
    for source_id in ("synthetic_chest_xray", "synthetic_dermoscopy"):
        run_source(source_id, shard_size=3, progress=lambda line: None)
    return LocalStore(settings_env["MEDTRINITY_OUTPUT"])


@pytest.fixture
def client(published, airflow_home):
    from fastapi.testclient import TestClient

    from medtrinity_tasks.browser.app import create_app

    with airflow_in_process(airflow_home):  # the app imports Airflow's API security
        app = create_app()
    app.dependency_overrides[app.router.dependencies[0].dependency] = lambda: None  # Airflow's login
    return TestClient(app)


def test_records_pages_cover_every_record_once_across_shards(published, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 5)
    manifest = views.read_manifest(published, "synthetic_dermoscopy")
    assert len(manifest["shards"]) > 1
    seen, page = [], 0
    while True:
        records, total = views.records_page(published, "synthetic_dermoscopy", page)
        if not records:
            break
        assert len(records) <= 5 and "image" not in records[0]
        seen += [record["id"] for record in records]
        page += 1
    assert total == manifest["counts"]["records"] == len(seen) == len(set(seen))


def test_index_lists_sources_with_counts_and_failures(client, published):
    failure = {
        "source_id": "synthetic_dermoscopy", "dag_id": "medtrinity__synthetic_dermoscopy", "run_id": "manual__x",
        "task_id": "process", "shard_id": "shard-00001", "map_index": 1, "try_number": 2,
        "error_class": "ShardFailed", "message": "something broke", "log_url": "http://airflow/log",
        "failed_at": "2026-11-28T10:00:00+00:00",
    }  # fmt: skip
    published.write_json(failure_key(failure), failure)
    page = client.get("/").text
    counts = views.read_manifest(published, "synthetic_chest_xray")["counts"]
    row = re.search(r'<tr data-source="synthetic_chest_xray">(.*?)</tr>', page, re.S).group(1)
    assert f'<td class="num">{counts["records"]}</td>' in row and counts["quarantined"] > 0
    assert f"{counts['rejected']} of {counts['inputs']}" in row
    assert 'data-source="synthetic_ct_abdomen"' in page and "never built" in page
    failures = re.search(r'<table id="failures">(.*?)</table>', page, re.S).group(1)
    assert "ShardFailed" in failures and "something broke" in failures and "shard-00001" in failures


def test_source_page_shows_records_and_their_roi_overlays(client, published):
    page = client.get("/sources/synthetic_dermoscopy").text
    records, total = views.records_page(published, "synthetic_dermoscopy", 0)
    assert page.count('class="card"') == len(records) == min(total, views.PAGE_SIZE)
    record = next(r for r in records if r["rois"])
    assert record["coarse_caption"] in page and record["description"]["roi_location"] in page
    image_path = re.search(rf'data-record="{record["id"]}">\s*<img[^>]*src="([^"]+)"', page).group(1)
    assert image_path.startswith(f"/sources/synthetic_dermoscopy/shards/{record['shard_id']}/")
    response = client.get(image_path)
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    mask = rle.decode(record["rois"][0]["mask_rle"])
    rows, cols = np.nonzero(mask)
    top = rows.min()
    assert (drawn[top, cols[rows == top][0]] == roi_colour(0)).all()  # the mask's outline is drawn


def test_quarantined_records_show_their_reasons(client, published):
    page = client.get("/sources/synthetic_chest_xray", params={"quarantined": "true"}).text
    records, total = views.records_page(published, "synthetic_chest_xray", 0, quarantined=True)
    assert total == views.read_manifest(published, "synthetic_chest_xray")["counts"]["quarantined"] > 0
    for reason in records[0]["quarantine_reasons"]:
        assert reason in page
    image = re.search(r'<img[^>]*src="([^"]+)"', page).group(1)
    assert image.endswith("?quarantined=true") and client.get(image).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/sources/no_such_source",
        "/sources/%2E%2E",  # "..": <out>/manifest.json is no source's
        "/sources/synthetic_ct_abdomen",  # catalogued, never built
        "/sources/synthetic_dermoscopy/shards/shard-99999/0.png",
        "/sources/synthetic_dermoscopy/shards/shard-00000/not-a-record.png",
        "/sources/synthetic_dermoscopy/shards/..%2F..%2Fmanifest/x.png",
    ],
)
def test_unknown_sources_shards_and_records_are_not_found(client, published, path):
    published.write_bytes("manifest.json", published.read_bytes("sources/synthetic_dermoscopy/manifest.json"))
    assert client.get(path).status_code == 404


def test_without_a_token_nothing_is_served(published, airflow_home):
    from fastapi.testclient import TestClient

    from medtrinity_tasks.browser.app import create_app

    with airflow_in_process(airflow_home):
        client = TestClient(create_app())
    assert client.get("/", headers={"accept": "application/json"}).status_code == 401
    assert client.get("/sources/synthetic_dermoscopy/shards/shard-00000/x.png").status_code == 401
