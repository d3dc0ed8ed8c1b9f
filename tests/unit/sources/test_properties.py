"""Property tests over the readers and layouts: random and mutated NIfTI, PNG, DICOM and CSV inputs never
crash a shard, never take unbounded memory, and always end as a record or a reject with its reason, in work
records that balance.

Each example writes a fresh source from valid small files (tests/mutations.py) broken in its own way, a
site catalog entry for it, and runs ``plan_shards`` and ``process_shard`` in process. The only error
allowed out is the plan's ``MedtrinityError`` about the whole source (a table without its columns, a
broken dataset.json, nothing usable at all), on one line. The size limits are set low here so that
the memory bound means something: within the defaults (4 GiB decoded per input) a mutated header may
legitimately claim more than the bound, and no reader may exceed the limits it is given."""

from __future__ import annotations

import csv
import io
import json
import resource
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import MedtrinityError
from medtrinity_tasks.run.accounting import LISTING
from medtrinity_tasks.run.pipeline import build_stages
from medtrinity_tasks.run.plan import plan_shards
from medtrinity_tasks.run.shard import process_shard
from medtrinity_tasks.sources.catalog import SourceEntry, get_source
from medtrinity_tasks.sources.layouts import list_inputs
from medtrinity_tasks.storage.shards import work_key
from medtrinity_tasks.storage.store import LocalStore
from tests.support import mutations as m

pytestmark = [  # broken inputs make the libraries warn as they read them; what matters is how each input ends
    pytest.mark.filterwarnings("ignore::UserWarning:pydicom.*"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning:nibabel.*"),
]
MEMORY_GROWTH_BYTES = int(1.5 * 2**30)
"""The most the process's peak memory may grow over the whole suite."""
LIMITS = {
    "MEDTRINITY_MAX_VOXELS": str(2**24),
    "MEDTRINITY_MAX_DECODED_MB": "256",
    "MEDTRINITY_MAX_IMAGE_PIXELS": str(2**24),
}
"""Size limits under which any one input that passes them stays well inside the memory bound."""
REASON_CHARS = 300
PROPERTY = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
    database=None,  # derandomized, a failure reproduces from the test alone: no example database in the tree
)
"""Settings of every property: reproducible in CI, no time limit per example (a shard takes about a second)."""

_LABELS_2D = {1: {"name": "polyp", "kind": "lesion", "organ": "colon", "disease": "colorectal polyp"}}
_LESION_CT = {1: {"name": "liver tumour", "kind": "lesion", "organ": "liver", "disease": "liver tumour"}}
_COMMON = {"name": "Property test source", "homepage": None, "licence": "CC0-1.0", "synthetic": True}
IMAGE_MASK_ENTRY = {
    **_COMMON,
    "id": "prop_image_mask",
    "modality": "endoscopy",
    "body_region": "colon",
    "format": "image2d",
    "layout": "image_mask",
    "image_mask": {"images_dir": "images", "masks_dir": "masks", "mask_suffix": "_segmentation.png"},
    "labels": _LABELS_2D,
}
TABLE_COLUMNS = ["Image Index", "Finding Label", "x", "y", "w", "h", "Report"]
TABLE_ENTRY = {
    **_COMMON,
    "id": "prop_image_table",
    "modality": "XR",
    "body_region": "chest",
    "format": "image2d",
    "layout": "image_table",
    "patient_orientation": ["L", "I"],
    "table": {
        "images_dir": "images",
        "files": [
            {
                "path": "table.csv",
                "image_column": "Image Index",
                "label_column": "Finding Label",
                "label_separator": "|",
                "box_columns": ["x", "y", "w", "h"],
                "text_columns": ["Report"],
            }
        ],
    },
    "labels": {
        1: {"name": "pulmonary nodule", "kind": "finding", "organ": "lung", "disease": "pulmonary nodule",
            "source_name": "Nodule"},
        2: {"name": "no finding", "kind": "finding", "source_name": "No Finding"},
    },
}  # fmt: skip
TABLE_IMAGES = ["img_0.png", "img_1.png", "img_2.png"]
MSD_ENTRY = {
    **_COMMON,
    "id": "prop_msd",
    "modality": "CT",
    "body_region": "abdomen",
    "format": "nifti",
    "layout": "msd",
    "labels": _LESION_CT,
}
SERIES_ENTRY = {
    **_COMMON,
    "id": "prop_dicom",
    "modality": "CT",
    "body_region": "abdomen",
    "format": "dicom",
    "layout": "series",
    "labels": _LESION_CT,
}


@pytest.fixture(scope="module")
def knowledge_dir(tmp_path_factory) -> Path:
    """No knowledge base: retrieval is off in this module (MEDTRINITY_KNOWLEDGE_TOP_K=0), so the session's
    indexing of the demo corpus (20 s on two cores) is not asked for."""
    return tmp_path_factory.mktemp("no_knowledge")


@pytest.fixture(scope="module")
def base(tmp_path_factory, knowledge_dir) -> Path:
    """Where examples write their sources, with the environment every run here shares."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "MEDTRINITY_RUNNER": "inprocess",
            "MEDTRINITY_KNOWLEDGE_TOP_K": "0",
            "MEDTRINITY_KNOWLEDGE_DIR": str(knowledge_dir),
            "MEDTRINITY_MIN_IMAGE_SIDE": "4",  # the examples' volumes are a few voxels across, to keep them quick
            **LIMITS,
        }.items():
            patch.setenv(key, value)
        root = tmp_path_factory.mktemp("properties")
        patch.setenv("MEDTRINITY_DATA_DIR", str(root))  # listings outside ``run`` read sources below it
        yield root


@pytest.fixture(scope="module")
def memory(base) -> int:
    """The peak resident size once every part of the pipeline that loads lazily has loaded (the gate's context,
    the de-identifier, the reference scorer's sentence encoder, the readers, and hypothesis's own table of unicode
    intervals, built when a text strategy is first validated): a valid source of each layout runs first, and must
    give records, and a table is refused once. Growth past it is the inputs' doing."""
    for strategy in (m.text(), m.file_stems()):
        strategy.validate()
    valid = [("case_0.nii.gz", [("gzip",)], [("gzip",)])]
    for entry, write in [
        (IMAGE_MASK_ENTRY, lambda root: _write_images(root, ["a.png", "b.png"])),
        (TABLE_ENTRY, lambda root: _write_table_source(root, _table_naming("img_2.png", box=True), [])),
        (MSD_ENTRY, lambda root: _write_msd_source(root, _msd_listing(valid), valid)),
        (SERIES_ENTRY, lambda root: _write_series(root, "export", {}, set(), set(), None)),
    ]:
        outcome = run(entry, write, base)
        assert_accounted(outcome)
        assert outcome.works[1]["counts"]["records"], outcome.works
    assert isinstance(listing(TABLE_ENTRY, lambda root: _write_table_source(root, b"x|y\n", []), base), MedtrinityError)
    return _peak_bytes()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def assert_memory_bounded(baseline: int) -> None:
    growth = _peak_bytes() - baseline
    assert growth < MEMORY_GROWTH_BYTES, f"peak memory grew by {growth / 2**20:.0f} MiB over the suite"


@dataclass
class Outcome:
    listed: list[dict]
    """What the source's layout lists (the plan's view), or [] when the plan refused the source."""
    works: list[dict]
    """The listing's work record, then every shard's."""
    plan_error: MedtrinityError | None
    stage_names: list[str]
    source_dir: str
    """Where the source was staged, which no reason may name."""


def run(entry: dict, write, base: Path) -> Outcome:
    """Write a source with ``write(source_dir)`` and its catalog entry in a fresh directory, plan it and
    process every shard; errors other than the plan's ``MedtrinityError`` propagate."""
    root = Path(tempfile.mkdtemp(dir=base, prefix="example-"))
    try:
        source_dir = root / "data" / entry["id"]
        source_dir.mkdir(parents=True)
        write(source_dir)
        catalog = root / "catalog"
        catalog.mkdir()
        (catalog / f"{entry['id']}.yaml").write_text(yaml.safe_dump(dict(entry, location=str(source_dir))))
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("MEDTRINITY_CATALOG_DIRS", str(catalog))
            patch.setenv("MEDTRINITY_DATA_DIR", str(root))
            patch.setenv("MEDTRINITY_OUTPUT", str(root / "out"))
            settings_ = load_settings()
            source = get_source(entry["id"], settings_)
            stage_names = [stage.name for stage in build_stages(source, settings_)]
            try:
                shards = plan_shards(entry["id"])
            except MedtrinityError as exc:
                return Outcome(_listed_after_refusal(exc, source, settings_), [], exc, stage_names, str(source_dir))
            for shard in shards:
                process_shard(shard)
            store = LocalStore(str(root / "out"))
            shard_ids = [LISTING, *(shard["shard_id"] for shard in shards)]
            works = [store.read_json(work_key(entry["id"], shard_id)) for shard_id in shard_ids]
            return Outcome(list_inputs(source, settings_), works, None, stage_names, str(source_dir))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _listed_after_refusal(exc: MedtrinityError, source, settings_) -> list[dict]:
    """The listing of a source whose plan found nothing usable (every input rejected), else []."""
    if "input files are rejected" in str(exc) or "finds no input files" in str(exc):
        return list_inputs(source, settings_)
    return []


def assert_accounted(outcome: Outcome, listing_file: str | None = None) -> None:
    """Every listed input ends used or rejected, once, with a reason; the counts balance; an allowed plan
    error is one line and says what is wrong with which file."""
    if outcome.plan_error is not None:
        message = str(outcome.plan_error)
        assert "\n" not in message, message
        if outcome.listed:  # nothing usable: each input says why
            assert all(item.get("reject_reason") for item in outcome.listed), message
            assert_reasons([item["reject_reason"] for item in outcome.listed], outcome)
        else:
            assert listing_file is not None and listing_file in message, message
        return
    listing, *shards = outcome.works
    planned = [*listing["inputs"], *(key for work in shards for key in work["inputs"])]
    assert sorted(planned) == sorted(item["source_relpath"] for item in outcome.listed)
    for work in outcome.works:
        counts, rejected = work["counts"], {r["input"]: r["reason"] for r in work["rejected"]}
        assert counts["inputs"] == len(work["inputs"]) == counts["used"] + counts["rejected"], counts
        assert counts["produced"] == counts["records"] + counts["quarantined"], counts
        assert set(work["used"]) | set(rejected) == set(work["inputs"]), work
        assert not set(work["used"]) & set(rejected), work
        assert_reasons(list(rejected.values()), outcome)
        assert_reasons([reason for q in work["quarantined"] for reason in q["reasons"]], outcome)


def assert_example(outcome: Outcome, memory: int, listing_file: str | None = None) -> None:
    """A property's checks of one example, which it also counts by what it came to."""
    event(_verdict(outcome))
    assert_accounted(outcome, listing_file)
    assert_memory_bounded(memory)


def _verdict(outcome: Outcome) -> str:
    """What an example came to, for hypothesis's statistics: whether the suite reaches the readers' deep paths."""
    if outcome.plan_error is not None:
        return "plan: every input rejected" if outcome.listed else "plan refused the source"
    counts = [work["counts"] for work in outcome.works[1:]]
    if any(c["records"] for c in counts):
        return "some records"
    return "quarantined only" if any(c["quarantined"] for c in counts) else "every input rejected"


def assert_reasons(reasons: list[str], outcome: Outcome) -> None:
    """Reasons are present and short; none is a stage's unexpected exception (a reader turns a bad file into its
    own reject, it does not fail the batch, and so its neighbours, with a raw error); and none names the directory
    the source is staged in, only files by their names (quotes are cut at 80 characters: its start would show)."""
    for reason in reasons:
        assert reason.strip() and len(reason) <= REASON_CHARS, reason
        assert not any(reason.startswith(f"{name} failed: ") for name in outcome.stage_names), reason
        assert outcome.source_dir[:40] not in reason, reason


# ---------------------------------------------------------------------------------------------------
# 2D images with masks


def _write(path: Path, data: bytes) -> bool:
    """Write a file unless its name is longer than the file system takes (the layout must still cope)."""
    try:
        path.write_bytes(data)
    except OSError:
        return False
    return True


mask_choices = st.one_of(st.sampled_from(["valid", "missing", "small", "rgb"]), m.png_file())
"""A mask as written: valid, absent, of another size, in colour, or a mutated valid mask."""


@settings(max_examples=15, **PROPERTY)
@given(
    images=st.lists(
        st.tuples(m.file_stems(), st.sampled_from([".png", ".jpg", ".PNG"]), m.png_file(), mask_choices),
        min_size=1,
        max_size=3,
        unique_by=lambda image: image[0],
    ),
    orphan=st.booleans(),
)
@pytest.mark.slow
def test_mutated_images_with_masks_end_as_records_or_rejects(base, memory, images, orphan):
    def write(root: Path) -> None:
        (root / "images").mkdir()
        (root / "masks").mkdir()
        for stem, suffix, mutations, mask in images:
            _write(root / "images" / f"{stem}{suffix}", m.apply(m.png(), mutations))
            target = root / "masks" / f"{stem}_segmentation.png"
            if mask == "valid":
                _write(target, m.png(mask=True))
            elif mask == "small":
                _write(target, m.png(20, 10, mask=True))
            elif mask == "rgb":
                _write(target, m.png(mask=True, rgb=True))
            elif mask != "missing":
                _write(target, m.apply(m.png(mask=True), mask))
        if orphan:
            _write(root / "masks" / "orphan_segmentation.png", m.png(mask=True))

    assert_example(run(IMAGE_MASK_ENTRY, write, base), memory)


# ---------------------------------------------------------------------------------------------------
# 2D images annotated by a CSV table


image_cells = st.one_of(
    st.sampled_from([*TABLE_IMAGES, "img_3.png"]),
    st.sampled_from(TABLE_IMAGES),
    st.sampled_from(["", "missing.png", "../outside.png", "/etc/hostname", "img_0", "IMG_0.PNG", "sub/img_0.png",
                     " img_1.png ", "img_0.png\0", "images/../img_0.png"]),
    m.text(),
)  # fmt: skip
label_cells = st.one_of(
    st.sampled_from(["Nodule", "No Finding", "Nodule|No Finding", "", "Alien", "nodule", " Nodule ", "Nodule|", "|"]),
    m.text(12),
)
box_cells = st.one_of(
    st.sampled_from(["", "10", "0", "-5", "1e308", "1e400", "nan", "inf", "-inf", "a", "1,2", "0x10", "1_000", " 7 "]),
    st.integers(-(10**6), 10**6).map(str),
    st.floats().map(str),
    m.text(8),
)
report_cells = st.one_of(m.text(), st.just("x" * 140_000))  # beyond the csv module's field limit


@st.composite
def tables(draw) -> bytes:
    """A CSV as tables come: its columns (reordered, or some missing, repeated or unknown), a sane row for most
    images, rows of random cells (some longer than the header), another delimiter, quoting or line end, a BOM, and
    now and then bytes broken after writing."""
    columns = draw(st.permutations(TABLE_COLUMNS))
    if draw(st.integers(0, 4)) == 0:
        columns = draw(st.lists(st.sampled_from([*TABLE_COLUMNS, "Extra", ""]), max_size=8))
    cells = {"Image Index": image_cells, "Finding Label": label_cells, "Report": report_cells}
    rows = []
    for name in TABLE_IMAGES:  # a sane row per image, most of the time: the random rows then meet a working table
        if draw(st.integers(0, 3)):
            box = draw(st.one_of(st.just([""] * 4), st.lists(st.integers(0, 40).map(str), min_size=4, max_size=4)))
            sane = dict(zip(["x", "y", "w", "h"], box, strict=True))
            sane.update({"Image Index": name, "Finding Label": "Nodule" if box[0] else "No Finding", "Report": "ok"})
            rows.append([sane.get(column, "") for column in columns])
    for _ in range(draw(st.integers(0, 3))):
        row = [draw(cells.get(column, box_cells)) for column in columns]
        if draw(st.integers(0, 3)) == 0:  # longer than the header (short rows: see the regression test below)
            row += draw(st.lists(box_cells, min_size=1, max_size=3))
        rows.append(row)
    rows = draw(st.permutations(rows))
    text = io.StringIO()
    writer = csv.writer(
        text,
        delimiter=draw(st.sampled_from([",", ",", ",", ";", "\t", "|"])),
        quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        lineterminator=draw(st.sampled_from(["\r\n", "\n", "\r"])),
    )
    writer.writerow(columns)
    writer.writerows(rows)
    data = ("\ufeff" if draw(st.booleans()) else "") + text.getvalue()
    raw = data.encode("utf-8", "surrogatepass")  # a lone surrogate becomes bytes that are not UTF-8
    return m.apply(raw, draw(m.byte_mutations([("start", 64)], max_size=2)) if draw(st.integers(0, 3)) == 0 else [])


def _write_table_source(root: Path, table: bytes, image_mutations: list) -> None:
    (root / "images").mkdir()
    for name, data in zip(TABLE_IMAGES, [m.png(depth16=True), m.png(), m.apply(m.png(), image_mutations)], strict=True):
        (root / "images" / name).write_bytes(data)
    (root / "table.csv").write_bytes(table)


def listing(entry: dict, write, base: Path) -> list[dict] | MedtrinityError:
    """What the layout lists for a source written by ``write(source_dir)`` (no pixel is read), or its
    ``MedtrinityError``; any other error propagates."""
    root = Path(tempfile.mkdtemp(dir=base, prefix="listing-"))
    try:
        write(root)
        source = SourceEntry.model_validate(dict(entry, location=str(root)))
        try:
            return list_inputs(source, load_settings())
        except MedtrinityError as exc:
            return exc
    finally:
        shutil.rmtree(root, ignore_errors=True)


def assert_refusal_names(error: MedtrinityError, listing_file: str) -> None:
    message = str(error)
    assert "\n" not in message and listing_file in message, message


def assert_listed_reason(item: dict) -> None:
    reason = item["reject_reason"]
    assert isinstance(reason, str) and reason.strip() and len(reason) <= REASON_CHARS, item


@settings(max_examples=200, **PROPERTY)
@given(table=tables())
def test_random_tables_list_as_inputs_or_refuse_the_table_in_one_line(base, table):
    """Every image file is an input, annotated with catalog labels and boxes of four numbers, or rejected with
    a reason; or the table is refused as a whole, in one line naming it."""
    listed = listing(TABLE_ENTRY, lambda root: _write_table_source(root, table, []), base)
    if isinstance(listed, MedtrinityError):
        assert_refusal_names(listed, "table.csv")
        return
    keys = [item["source_relpath"] for item in listed]
    assert len(keys) == len(set(keys)) and {f"images/{name}" for name in TABLE_IMAGES} <= set(keys)
    names = {label["name"] for label in TABLE_ENTRY["labels"].values()}
    for item in listed:
        if item.get("reject_reason"):
            assert_listed_reason(item)
            continue
        assert set(item["image_labels"]) <= names, item
        for box in item["annotation_boxes"]:
            assert box["label"] in names and len(box["bbox_xyxy"]) == 4, item
            assert all(isinstance(v, float) for v in box["bbox_xyxy"]), item


@settings(max_examples=20, **PROPERTY)
@given(table=tables(), image=m.png_file())
@pytest.mark.slow
def test_random_tables_with_mutated_images_end_as_records_or_rejects(base, memory, table, image):
    assert_example(run(TABLE_ENTRY, lambda root: _write_table_source(root, table, image), base), memory, "table.csv")


# ---------------------------------------------------------------------------------------------------
# NIfTI volumes in the Decathlon layout

path_cells = st.one_of(
    st.sampled_from(["./imagesTr/case_0.nii.gz", "imagesTr/case_0.nii", "./labelsTr/case_0.nii.gz", "../outside.nii",
                     "/etc/hostname", "", ".", "imagesTr", "imagesTr/\0.nii", "a" * 200]),
    m.text(),
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | m.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["image", "label", "x"]), inner),
    max_leaves=6,
)
entries = st.one_of(
    st.fixed_dictionaries({"image": path_cells}, optional={"label": path_cells | json_values}),
    json_values,
)


@st.composite
def dataset_jsons(draw, valid: list[dict]) -> bytes:
    """A dataset.json: the valid listing, or one with random entries, keys or values, or broken JSON text."""
    kind = draw(st.sampled_from(["valid", "valid", "entries", "value", "bytes"]))
    listing_ = {"name": "prop", "training": valid, "test": []}
    if kind == "entries":
        listing_["training"] = draw(st.lists(entries, max_size=4)) + valid
        listing_["test"] = draw(st.one_of(st.lists(path_cells | entries, max_size=3), json_values))
    elif kind == "value":
        listing_ = draw(st.one_of(json_values, st.fixed_dictionaries({"training": json_values})))
    data = json.dumps(listing_).encode()  # ensure_ascii: an escaped byte (\udcff) travels as a JSON escape
    return m.apply(data, draw(m.byte_mutations([("start", len(data))], max_size=3))) if kind == "bytes" else data


CASE = {"image": "./imagesTr/case_0.nii.gz", "label": "./labelsTr/case_0.nii.gz"}


def _write_msd_source(root: Path, dataset: bytes, cases: list[tuple[str, list, list | str]]) -> None:
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_bytes(dataset)
    for name, image, label in cases:
        (root / "imagesTr" / name).write_bytes(m.apply(m.nifti(), image))
        if label != "missing":
            (root / "labelsTr" / name).write_bytes(m.apply(m.nifti(label=True), label))


@settings(max_examples=200, **PROPERTY)
@given(dataset=dataset_jsons([CASE]))
def test_random_dataset_jsons_list_as_inputs_or_refuse_the_listing_in_one_line(base, dataset):
    """Every listed image is an input or a reject with a reason, the volume on disk among them; or the listing
    is refused as a whole, in one line naming it."""
    listed = listing(
        MSD_ENTRY, lambda root: _write_msd_source(root, dataset, [("case_0.nii.gz", [("gzip",)], [("gzip",)])]), base
    )
    if isinstance(listed, MedtrinityError):
        assert_refusal_names(listed, "dataset.json")
        return
    keys = [item["source_relpath"] for item in listed]
    assert len(keys) == len(set(keys)) and "imagesTr/case_0.nii.gz" in keys
    for item in listed:
        if item.get("reject_reason"):
            assert_listed_reason(item)
        else:
            assert isinstance(item["source_relpath"], str) and isinstance(item.get("label_relpath") or "", str)


intact = st.just([("gzip",)])
"""A valid volume as written: gzipped, nothing else."""


@st.composite
def msd_cases(draw) -> list[tuple[str, list, list | str]]:
    """Two cases (file name, image mutations, label mutations or "missing"), each mutated or left valid, so that
    some examples also reach slicing and the gate."""
    cases = []
    for number in range(2):
        image = draw(st.one_of(intact, m.nifti_file(), m.nifti_file()))
        label = draw(st.one_of(intact, intact, st.just("missing"), m.nifti_file()))
        suffix = ".nii.gz" if ("gzip",) in image else ".nii"
        cases.append((f"case_{number}{suffix}", image, label))
    return cases


@settings(max_examples=16, **PROPERTY)
@given(cases=msd_cases(), dataset=st.sampled_from(["valid", "valid", "valid", "broken"]))
@pytest.mark.slow
def test_mutated_volumes_end_as_records_or_rejects(base, memory, cases, dataset):
    listing_ = _msd_listing(cases) if dataset == "valid" else b'{"training": ['
    assert_example(run(MSD_ENTRY, lambda root: _write_msd_source(root, listing_, cases), base), memory, "dataset.json")


def _msd_listing(cases: list[tuple[str, list, list | str]]) -> bytes:
    training = [{"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"} for name, _, _ in cases]
    return json.dumps({"training": training}).encode()


# ---------------------------------------------------------------------------------------------------
# DICOM CT series with a SEG


@settings(max_examples=20, **PROPERTY)
@given(
    changed=st.dictionaries(st.integers(0, 6), m.dicom_file_mutations(), max_size=3),
    dropped=st.sets(st.integers(0, 6), max_size=2),
    copied=st.sets(st.integers(0, 6), max_size=1),
    folder=m.file_stems(),
    stray=st.one_of(st.none(), st.binary(max_size=512), st.just(m.png())),
)
@pytest.mark.slow
def test_mutated_dicom_series_end_as_records_or_rejects(base, memory, changed, dropped, copied, folder, stray):
    outcome = run(SERIES_ENTRY, lambda root: _write_series(root, folder, changed, dropped, copied, stray), base)
    assert_example(outcome, memory)


def _write_series(
    root: Path, folder: str, changed: dict, dropped: set[int], copied: set[int], stray: bytes | None
) -> None:
    """The fixture series under ``folder/series`` with the ``changed`` files mutated, the ``dropped`` ones left
    out, the ``copied`` ones written twice, and a ``stray`` file beside it."""
    series = root / folder / "series"
    series.mkdir(parents=True)
    for index, valid in enumerate(m.dicom_series()):
        if index in dropped:
            continue
        elements, mutations = changed.get(index, ([], []))
        data = m.dicom_file(valid, elements, mutations)
        name = "seg.dcm" if index == 6 else f"IM{index:04d}.dcm"
        (series / name).write_bytes(data)
        if index in copied:
            (series / f"copy_{name}").write_bytes(data)
    if stray is not None:
        (root / folder / "stray.dcm").write_bytes(stray)


# ---------------------------------------------------------------------------------------------------
# Regressions: inputs the properties found crashing a listing or a loader, each pinned with the same checks.

LONG_NAME = "x" * 251
"""A stem the file system takes with ".png" (255 bytes), but not with "_segmentation.png" (268)."""
LONG_NAMES = {
    "image_mask": (IMAGE_MASK_ENTRY, lambda root: _write_images(root, [f"{LONG_NAME}.png"])),
    "image_table": (TABLE_ENTRY, lambda root: _write_table_source(root, _table_naming(f"{'x' * 300}.png"), [])),
    "msd": (MSD_ENTRY, lambda root: _write_msd_source(root, _dataset_naming(f"imagesTr/{'x' * 300}.nii"), [])),
}


def _write_images(root: Path, names: list[str]) -> None:
    """Valid images with valid masks, those the file system takes."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for name in names:
        (root / "images" / name).write_bytes(m.png())
        _write(root / "masks" / f"{name.rsplit('.', 1)[0]}_segmentation.png", m.png(mask=True))


def _table_naming(image: str, *, box: bool = False) -> bytes:
    """A valid table of the images and ``image``, which has a box and a report if asked."""
    rows = [[name, "No Finding", "", "", "", "", ""] for name in [*TABLE_IMAGES, image]]
    if box:
        rows[-1] = [image, "Nodule", "10", "8", "12", "9", "A nodule in the right upper zone."]
    return "\n".join(",".join(row) for row in [TABLE_COLUMNS, *rows]).encode()


def _dataset_naming(image: str) -> bytes:
    return json.dumps({"training": [{"image": image, "label": image.replace("imagesTr", "labelsTr")}]}).encode()


@pytest.mark.parametrize("layout", sorted(LONG_NAMES))
def test_a_name_longer_than_the_file_system_takes_is_rejected(base, layout):
    entry, write = LONG_NAMES[layout]
    assert_accounted(run(entry, write, base), "dataset.json" if layout == "msd" else "table.csv")


def test_a_dataset_json_path_with_a_lone_surrogate_is_rejected(base):
    dataset = _dataset_naming("imagesTr/\ud800.nii")
    assert_accounted(run(MSD_ENTRY, lambda root: _write_msd_source(root, dataset, []), base), "dataset.json")


@pytest.mark.parametrize("short", ["img_0.png", "img_0.png,Nodule", 'img_0.png,No Finding,,,,"'])
def test_a_table_row_shorter_than_its_header_is_rejected(base, short):
    table = (_table_naming("img_1.png").decode() + "\n" + short + "\n").encode()
    assert_accounted(run(TABLE_ENTRY, lambda root: _write_table_source(root, table, []), base), "table.csv")


def test_a_deeply_nested_dataset_json_is_refused_in_one_line(base):
    outcome = run(MSD_ENTRY, lambda root: _write_msd_source(root, b"[" * 100_000, []), base)
    assert outcome.plan_error is not None, outcome.works
    assert_accounted(outcome, "dataset.json")


def test_a_file_name_that_is_not_utf8_costs_no_neighbour(base):
    outcome = run(IMAGE_MASK_ENTRY, lambda root: _write_images(root, ["good.png", "\udcff.png"]), base)
    assert_accounted(outcome)
    assert outcome.works[1]["counts"]["records"] >= 1, outcome.works[1]


def test_a_reason_names_a_file_by_its_name_only(base):
    def write(root: Path) -> None:
        _write_images(root, ["good.png"])
        (root / "images" / "scan\u200b.png").write_bytes(b"not an image")
        (root / "masks" / "scan\u200b_segmentation.png").write_bytes(m.png(mask=True))

    assert_accounted(run(IMAGE_MASK_ENTRY, write, base))
