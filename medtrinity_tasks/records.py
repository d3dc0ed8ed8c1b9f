"""The triplet record and its Arrow schema: the one contract between stages, shards and readers.

A record is one 2D image with its regions of interest and its multigranular description. Inside
the pipeline a row also carries a few working columns (``WORK_FIELDS``) that never reach a shard.
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa

DESCRIPTION_SECTIONS = ("modality", "organ_tissue", "roi_location", "roi_texture", "region_relationship")

MASK_RLE = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
"""COCO RLE: ``size`` is [height, width], ``counts`` the compressed column-major run lengths."""

ROI = pa.struct(
    [
        ("label", pa.string()),
        ("bbox_xyxy", pa.list_(pa.float64())),  # pixels, x0 y0 x1 y1, x1/y1 exclusive
        ("mask_rle", MASK_RLE),
        ("area_fraction", pa.float64()),  # ROI pixels / image pixels
        ("centroid_xy", pa.list_(pa.float64())),
        ("location", pa.string()),  # words, in patient terms
        ("image_location", pa.string()),  # words, on the image grid
        ("organ_location", pa.string()),  # words, relative to an organ mask (which lung, which zone), if any
        ("size", pa.string()),  # words: two perpendicular diameters, in mm where the spacing is known
        ("size_mm", pa.list_(pa.float64())),  # [major, minor] diameters in mm, or null
        ("shape", pa.string()),  # round, oval, elongated, irregular
        ("margin", pa.string()),  # well- or ill-defined
        ("texture", pa.string()),  # words: intensity against surroundings (HU on CT), homogeneity
        ("origin", pa.string()),  # "annotation", or "expert <name> <version>"
    ]
)

KNOWLEDGE = pa.struct(
    [
        ("id", pa.string()),
        ("corpus", pa.string()),
        ("title", pa.string()),
        ("score", pa.float64()),
        ("text", pa.string()),
    ]
)
"""A retrieved passage: its chunk id in its corpus, the fused rank score, and its text within the budget."""

DESCRIPTION = pa.struct([(name, pa.string()) for name in DESCRIPTION_SECTIONS])

GENERATOR = pa.struct(
    [
        ("engine", pa.string()),
        ("model", pa.string()),
        ("prompt_version", pa.string()),
        ("tokens_in", pa.int32()),  # as the engine counted them; null for the template engine
        ("tokens_out", pa.int32()),
        ("latency_s", pa.float64()),  # the request's wall time, retries included
    ]
)

REFERENCE_SCORES = pa.struct(
    [
        ("rouge_l", pa.float64()),  # against the source's human text (report, caption, QA answer)
        ("similarity", pa.float64()),  # cosine of the two texts' sentence embeddings
        ("agreement", pa.float64()),  # share of the aspects below the human text names that agree
        ("modality_agrees", pa.bool_()),  # null: the human text names no modality
        ("organ_agrees", pa.bool_()),
        ("laterality_agrees", pa.bool_()),
        ("disease_agrees", pa.bool_()),
    ]
)
QUALITY = pa.struct(
    [
        ("suite", pa.string()),
        ("passed", pa.bool_()),
        ("failures", pa.list_(pa.string())),
        ("reference", REFERENCE_SCORES),  # null where the source has no human text for the record
        ("judge", pa.struct([(name, pa.int8()) for name in DESCRIPTION_SECTIONS])),  # 1-5 per section; null: no judge
    ]
)

STAGE_VERSION = pa.struct([("name", pa.string()), ("version", pa.string())])

PROVENANCE = pa.struct(
    [
        ("source_name", pa.string()),
        ("licence", pa.string()),
        ("pipeline_version", pa.string()),
        ("run_id", pa.string()),
        ("stages", pa.list_(STAGE_VERSION)),
    ]
)

IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
"""The layout Hugging Face ``datasets`` reads as an Image feature."""

RECORD_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source_id", pa.string()),
        ("source_relpath", pa.string()),
        ("modality", pa.string()),
        ("sequence", pa.string()),  # MR sequence or image channel (FLAIR, T1w, ...), where the source names one
        ("organ", pa.string()),
        ("diseases", pa.list_(pa.string())),
        ("image", IMAGE),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("axis", pa.string()),
        ("slice_index", pa.int32()),
        ("spacing_mm", pa.list_(pa.float64())),  # row spacing, column spacing, slice spacing
        ("patient_orientation", pa.list_(pa.string())),  # patient direction of +column, +row (DICOM 0020,0020)
        ("view", pa.string()),  # a planar image's projection and side where its header gives them ("left CC", "PA")
        ("anatomy", pa.list_(pa.string())),  # labelled structures in view, e.g. organs
        ("rois", pa.list_(ROI)),
        ("coarse_caption", pa.string()),
        ("reference_text", pa.string()),  # text that came with the image (report, caption, QA), if any
        ("knowledge", pa.list_(KNOWLEDGE)),
        ("description", DESCRIPTION),
        ("description_text", pa.string()),
        ("generator", GENERATOR),
        ("quality", QUALITY),
        ("provenance", PROVENANCE),
    ]
)

WORK_FIELDS = [
    pa.field("file_relpath", pa.string()),  # where the input lies, when its name is published as a pseudonym
    pa.field("label_relpath", pa.string()),  # the input's annotation file
    pa.field("body_region", pa.string()),  # what the image shows: its DICOM BodyPartExamined, else the catalog's
    pa.field("slice_side", pa.string()),  # a sagittal slice's side of the midline ("left", "right", "midline")
    pa.field("label_slice", pa.binary()),  # the annotation slice: uint16 label values, row-major, height x width
    pa.field("image_labels", pa.list_(pa.string())),  # catalog names of image-level class labels
    pa.field("member_files", pa.list_(pa.string())),  # a DICOM series' image files, in slice order
    pa.field("annotation_files", pa.list_(pa.string())),  # its SEG and RTSTRUCT files
    pa.field("annotation_boxes", pa.list_(pa.struct([("label", pa.string()), ("bbox_xyxy", pa.list_(pa.float64()))]))),
    pa.field("reject_reason", pa.string()),  # set: the row stands for a rejected input file
    pa.field("reject_kind", pa.string()),  # what the reject is counted as (reasons.rejected sets both)
    pa.field("quarantine_reasons", pa.list_(pa.string())),  # set: the record goes to quarantine
    pa.field("quarantine_kinds", pa.list_(pa.string())),  # each reason's kind (reasons.quarantined sets both)
]

ROW_SCHEMA = pa.schema(list(RECORD_SCHEMA) + WORK_FIELDS)
"""What flows between stages: a record plus its working columns."""

QUARANTINE_SCHEMA = pa.schema(
    [*RECORD_SCHEMA, ROW_SCHEMA.field("quarantine_reasons"), ROW_SCHEMA.field("quarantine_kinds")]
)
"""A quarantined record keeps its reasons and their kinds."""


def record_id(source_id: str, relpath: str, axis: str, slice_index: int) -> str:
    """A stable id: rerunning a source yields the same ids, so shards are rewritten, never duplicated."""
    key = f"{source_id}\x1f{relpath}\x1f{axis}\x1f{slice_index}".encode()
    return hashlib.sha256(key).hexdigest()[:32]


def rows_to_table(rows: list[dict], schema: pa.Schema = ROW_SCHEMA) -> pa.Table:
    """Rows to a table of exactly ``schema``: missing keys become nulls, extra keys are dropped."""
    names = set(schema.names)
    return pa.Table.from_pylist([{k: v for k, v in row.items() if k in names} for row in rows], schema=schema)


def huggingface_features(schema: pa.Schema = RECORD_SCHEMA) -> dict:
    """The ``datasets`` feature description of ``schema``, with ``image`` as an Image feature."""

    def feature(arrow_type: pa.DataType) -> dict:
        if pa.types.is_struct(arrow_type):
            return {f.name: feature(f.type) for f in arrow_type}
        if pa.types.is_list(arrow_type):
            return {"feature": feature(arrow_type.value_type), "_type": "List"}
        dtype = {pa.binary(): "binary", pa.bool_(): "bool"}.get(arrow_type, str(arrow_type))
        return {"dtype": dtype, "_type": "Value"}

    features = {f.name: feature(f.type) for f in schema}
    features["image"] = {"_type": "Image"}
    return features


def shard_schema(schema: pa.Schema = RECORD_SCHEMA) -> pa.Schema:
    """``schema`` with the metadata that makes ``datasets.load_dataset('parquet', ...)`` decode images."""
    info = {"info": {"features": huggingface_features(schema)}}
    return schema.with_metadata({b"huggingface": json.dumps(info).encode()})
