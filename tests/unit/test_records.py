import pyarrow as pa
import pytest

from medtrinity_tasks.records import (
    DESCRIPTION_SECTIONS,
    RECORD_SCHEMA,
    ROW_SCHEMA,
    huggingface_features,
    record_id,
    rows_to_table,
    shard_schema,
)


def test_record_schema_has_the_triplet_fields():
    expected = {
        "id", "source_id", "source_relpath", "modality", "organ", "diseases", "image", "width", "height",
        "axis", "slice_index", "spacing_mm", "rois", "coarse_caption", "knowledge", "description",
        "description_text", "generator", "quality", "provenance",
    }  # fmt: skip
    assert expected <= set(RECORD_SCHEMA.names)
    assert RECORD_SCHEMA.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    roi = RECORD_SCHEMA.field("rois").type.value_type
    assert {"label", "bbox_xyxy", "mask_rle", "area_fraction", "centroid_xy", "location", "origin"} <= {
        f.name for f in roi
    }
    assert [f.name for f in RECORD_SCHEMA.field("description").type] == list(DESCRIPTION_SECTIONS)
    assert {"pipeline_version", "run_id", "licence"} <= {f.name for f in RECORD_SCHEMA.field("provenance").type}


def test_record_id_is_stable_and_distinguishes_every_part():
    base = record_id("src", "imagesTr/a.nii.gz", "axial", 3)
    assert base == record_id("src", "imagesTr/a.nii.gz", "axial", 3)
    others = {
        record_id("src2", "imagesTr/a.nii.gz", "axial", 3),
        record_id("src", "imagesTr/b.nii.gz", "axial", 3),
        record_id("src", "imagesTr/a.nii.gz", "coronal", 3),
        record_id("src", "imagesTr/a.nii.gz", "axial", 4),
    }
    assert base not in others and len(others) == 4


def test_rows_to_table_fills_missing_and_drops_unknown_keys():
    table = rows_to_table([{"id": "x", "width": 4, "not_a_column": 1}])
    assert table.schema == ROW_SCHEMA
    row = table.to_pylist()[0]
    assert row["id"] == "x" and row["width"] == 4 and row["rois"] is None


def test_rows_to_table_rejects_wrong_types():
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_to_table([{"width": "wide"}])


def test_huggingface_features_describe_the_whole_schema():
    datasets = pytest.importorskip("datasets")
    features = datasets.Features.from_dict(huggingface_features())
    assert isinstance(features["image"], datasets.Image)
    assert list(features) == RECORD_SCHEMA.names
    assert features.arrow_schema.field("rois").type.value_type.field("bbox_xyxy").type == pa.list_(pa.float64())
    assert b"huggingface" in shard_schema().metadata


def test_the_command_line_offers_every_sample_source():
    from medtrinity_tasks.cli import SAMPLE_SOURCE_IDS
    from medtrinity_tasks.sources.catalog import load_catalog
    from medtrinity_tasks.sources.samples import SAMPLE_SOURCES

    assert sorted(SAMPLE_SOURCE_IDS) == sorted(SAMPLE_SOURCES)
    assert set(SAMPLE_SOURCES) <= set(load_catalog())
