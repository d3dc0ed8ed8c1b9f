"""The record gate: a Great Expectations suite run over each shard's records before it is written.

The suite checks the record contract (schema, completeness, value ranges, the five sections within
their length bounds, unique ids), images too small or too narrow to describe, the consistency columns
``validation.consistency`` computes (the text against the facts it was written from, no PHI-like
strings) and the template defects ``validation.defects`` finds in the text. Records that fail a
record-level expectation are quarantined with the reasons; nothing is dropped. A failing
table-level expectation (a column missing) means the pipeline itself is broken, so it raises
instead of quarantining everything.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache

import pandas as pd

from medtrinity_tasks.generation.prompt import SECTION_MAX_CHARS
from medtrinity_tasks.reasons import Reason, quarantined
from medtrinity_tasks.records import DESCRIPTION_SECTIONS, RECORD_SCHEMA
from medtrinity_tasks.validation.consistency import CHECKS, Vocabulary, own_sections, read
from medtrinity_tasks.validation.defects import section_defects

SUITE_NAME = "medtrinity_records_v3"
REQUIRED = ["id", "source_id", "source_relpath", "modality", "organ", "image_bytes", "coarse_caption",
            "description_text", "width", "height", "slice_index"]  # fmt: skip


class GateError(RuntimeError):
    """The shard as a whole does not match the record contract."""


def _rois_inside_image(row: dict) -> bool:
    for roi in row.get("rois") or []:
        x0, y0, x1, y1 = roi["bbox_xyxy"]
        if not (0 <= x0 < x1 <= row["width"] and 0 <= y0 < y1 <= row["height"]):
            return False
    return True


def _rois_area_valid(row: dict) -> bool:
    return all(0.0 < roi["area_fraction"] <= 1.0 for roi in row.get("rois") or [])


def check_frame(rows: list[dict], vocab: Vocabulary) -> pd.DataFrame:
    """The record columns plus the derived columns the suite checks, one row per record."""
    frame = pd.DataFrame.from_records([{k: row.get(k) for k in RECORD_SCHEMA.names} for row in rows])
    frame["image_bytes"] = [(row.get("image") or {}).get("bytes") for row in rows]
    frame["rois_inside_image"] = [_rois_inside_image(row) for row in rows]
    frame["rois_area_valid"] = [_rois_area_valid(row) for row in rows]
    frame["id_first_seen"] = ~frame["id"].duplicated()  # ids address content: a repeat is the same image again
    frame["image_degeneracy"] = [vocab.image_bounds.degeneracy(row.get("width"), row.get("height")) for row in rows]
    frame["text_defects"] = [section_defects(own_sections(row)) for row in rows]
    for checked, detail in DETAILED.values():
        frame[checked] = frame[detail].isna()
    readings = [read(row, vocab) for row in rows]
    for column, (agrees, _) in CHECKS.items():
        frame[column] = [agrees(reading) for reading in readings]
    for name in DESCRIPTION_SECTIONS:  # a missing section reads as empty: one check covers both
        frame[f"section_{name}"] = [(row.get("description") or {}).get(name) or "" for row in rows]
    return frame.reset_index(drop=True)


DETAILED = {
    "degenerate image": ("image_proportionate", "image_degeneracy"),
    "description has a template defect": ("text_well_formed", "text_defects"),
}
"""Checks whose reason says what is wrong in each record: kind -> (the column checked, the column that
holds each record's particulars)."""


def _expectations():
    """(expectation, quarantine reason kind, the column with each record's particulars) triples; a kind
    of None marks a table-level check."""
    import great_expectations as gx

    e = gx.expectations
    checks = [(e.ExpectTableColumnsToMatchSet(column_set=RECORD_SCHEMA.names, exact_match=False), None)]
    checks += [(e.ExpectColumnValuesToNotBeNull(column=c), f"missing {c}") for c in REQUIRED]
    checks += [
        (e.ExpectColumnValuesToBeInSet(column="id_first_seen", value_set=[True]), "duplicate id"),
        (e.ExpectColumnValuesToBeBetween(column="width", min_value=1, max_value=65535), "image width out of range"),
        (e.ExpectColumnValuesToBeBetween(column="height", min_value=1, max_value=65535), "image height out of range"),
        (e.ExpectColumnValuesToBeBetween(column="slice_index", min_value=0), "negative slice index"),
        (e.ExpectColumnValuesToBeInSet(column="rois_inside_image", value_set=[True]), "ROI box outside the image"),
        (e.ExpectColumnValuesToBeInSet(column="rois_area_valid", value_set=[True]), "ROI area fraction not in (0, 1]"),
    ]
    checks += [
        (
            e.ExpectColumnValueLengthsToBeBetween(column=f"section_{name}", min_value=1, max_value=SECTION_MAX_CHARS),
            f"description section {name} empty, missing or too long",
        )
        for name in DESCRIPTION_SECTIONS
    ]
    checks += [(e.ExpectColumnValuesToBeInSet(column=c, value_set=[True]), reason) for c, (_, reason) in CHECKS.items()]
    triples = [(expectation, kind, None) for expectation, kind in checks]
    return triples + [
        (e.ExpectColumnValuesToBeInSet(column=checked, value_set=[True]), kind, detail)
        for kind, (checked, detail) in DETAILED.items()
    ]


@lru_cache(maxsize=1)
def _suite():
    """One ephemeral context, datasource and suite per process: building them costs seconds."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("records")
        .add_dataframe_asset("shard")
        .add_batch_definition_whole_dataframe("all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=SUITE_NAME))
    reasons = {}
    for expectation, kind, detail in _expectations():
        reasons[suite.add_expectation(expectation).id] = (kind, detail)
    return batch_definition, suite, reasons


def validate_records(rows: list[dict], vocab: Vocabulary):
    """Split ``rows`` into (passed, quarantined, the suite's validation result); each row gets
    ``quality``, the quarantined their reasons (``reasons.quarantined``). The result is None for no rows."""
    if not rows:
        return [], [], None
    batch_definition, suite, reasons = _suite()
    frame = check_frame(rows, vocab)
    # SUMMARY with room for every row names each failing row, a quarter faster than COMPLETE
    result = batch_definition.get_batch(batch_parameters={"dataframe": frame}).validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": len(frame)}
    )
    failures: dict[int, list[Reason]] = {}
    for check in result.results:
        if check.success:
            continue
        kind, detail = reasons[check.expectation_config.id]
        if kind is None:
            raise GateError(f"shard does not match the record schema: {check.expectation_config.kwargs}")
        for index in check.result.get("partial_unexpected_index_list") or []:
            reason = Reason.of(kind, frame.at[int(index), detail] if detail else None)
            failures.setdefault(int(index), []).append(reason)
    passed, failed = [], []
    for index, row in enumerate(rows):
        reasons_here = failures.get(index, [])
        texts = [reason.text for reason in reasons_here]
        quality = dict(row.get("quality") or {}, suite=SUITE_NAME, passed=not reasons_here, failures=texts)
        if reasons_here:
            failed.append(quarantined(dict(row, quality=quality), reasons_here))
        else:
            passed.append(dict(row, quality=quality))
    return passed, failed, result
