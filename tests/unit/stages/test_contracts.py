"""Stage contracts: the columns each stage reads and writes, checked once when the stage list is built,
and the optional modules a stage needs, checked once when it is built."""

from __future__ import annotations

import pickle

import pytest

from medtrinity_tasks.config import load_settings
from medtrinity_tasks.errors import EngineUnavailable, MedtrinityError
from medtrinity_tasks.generation import ENGINES
from medtrinity_tasks.generation.vllm_engine import VLLMDescription
from medtrinity_tasks.records import ROW_SCHEMA
from medtrinity_tasks.run.pipeline import build_stages
from medtrinity_tasks.sources.catalog import load_catalog
from medtrinity_tasks.sources.layouts import LISTING_COLUMNS, list_inputs
from medtrinity_tasks.sources.samples import SAMPLE_SOURCES
from medtrinity_tasks.stages import Requirement, Stage, check_columns
from medtrinity_tasks.stages.base import DatasetStage, InputStage


def library_stages() -> list[type[Stage]]:
    """Every stage class of the library (``run.pipeline`` imports every stage module)."""
    found, todo = [], [Stage]
    while todo:
        for subclass in todo.pop().__subclasses__():
            todo.append(subclass)
            if subclass.__module__.startswith("medtrinity_tasks.") and subclass not in (InputStage, DatasetStage):
                found.append(subclass)
    return found


def test_every_declared_column_is_a_row_schema_column():
    stages = library_stages()
    assert len(stages) >= 12  # the three first stages, ROIs, experts, caption, retrieval, engines, judge
    for stage in stages:
        declared = (*stage.reads, *stage.reads_if_present, *stage.writes)
        assert set(declared) <= set(ROW_SCHEMA.names), (stage.__name__, set(declared) - set(ROW_SCHEMA.names))
    assert set(LISTING_COLUMNS) <= set(ROW_SCHEMA.names)


ACCOUNTING = {name for name in ROW_SCHEMA.names if name.startswith(("reject_", "quarantine_"))}
"""A reject's or a quarantine's reasons: any stage may set them, and no stage's contract names them."""


def test_every_sample_listing_writes_only_the_declared_listing_columns(samples_dir):
    settings = load_settings({"MEDTRINITY_SAMPLES_DIR": str(samples_dir)})
    catalog = load_catalog(settings)
    for source_id in SAMPLE_SOURCES:
        for item in list_inputs(catalog[source_id], settings):
            undeclared = set(item) - set(LISTING_COLUMNS) - ACCOUNTING - {"scope"}  # scope: the plan's
            assert not undeclared, (source_id, undeclared)


class Captions(Stage):
    name = "captions"
    reads = ("rois", "anatomy")
    writes = ("coarse_caption",)


class Rois(Stage):
    name = "rois"
    reads = ("image",)
    writes = ("rois",)


def test_a_stage_reading_a_column_nothing_before_it_writes_is_refused_naming_it():
    check_columns([Rois(), Captions()], ["image", "anatomy"])
    with pytest.raises(MedtrinityError, match="stage captions reads anatomy, which neither the listing nor a stage"):
        check_columns([Rois(), Captions()], ["image"])
    with pytest.raises(MedtrinityError, match="stage captions reads rois, anatomy"):
        check_columns([Captions(), Rois()], ["image"])


def test_every_catalog_source_passes_the_column_check_for_every_engine(tmp_path, monkeypatch):
    """Every shipped entry, with its expert where it has one, retrieval, each engine and the judge."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setenv("MEDTRINITY_DATA_DIR", str(tmp_path))  # where real sources' locations point
    settings = load_settings().with_changes(deid_salt="a test salt", vllm_model=str(model), judge="openai")
    monkeypatch.setattr(VLLMDescription, "requires", ())  # its stage is built here, where vLLM is not installed
    catalog = load_catalog(settings)
    assert len(catalog) > 20
    for source in catalog.values():
        for engine in ENGINES:
            stages = build_stages(source, settings, engine)  # raises where a stage reads an unwritten column
            assert stages[-1].name == "judge" and stages[-3].name == "retrieve_knowledge"


class NeedsAMissingModule(Stage):
    name = "needs_missing"
    requires = (
        Requirement("medtrinity_no_such_module", "gpu", EngineUnavailable, "no-such-module"),
        Requirement("pickle", "experts"),
        Requirement("medtrinity_no_such_other", "experts"),
    )


class NeedsPickle(Stage):
    name = "needs_pickle"
    requires = (Requirement("pickle", "experts"),)


def test_a_missing_optional_module_fails_when_the_stage_is_built_naming_the_pip_extra():
    with pytest.raises(EngineUnavailable) as error:
        NeedsAMissingModule()
    assert str(error.value) == (
        "needs_missing needs no-such-module and medtrinity_no_such_other, which are not installed: "
        "pip install 'medtrinity-tasks[experts,gpu]'"
    )
    assert NeedsPickle().requires  # installed: built


def test_a_stage_is_checked_when_built_not_when_a_worker_unpickles_it(monkeypatch):
    sent = pickle.dumps(NeedsPickle())
    monkeypatch.setattr(NeedsPickle, "requires", NeedsAMissingModule.requires)
    assert isinstance(pickle.loads(sent), NeedsPickle)  # a worker receives the stage the driver checked
    with pytest.raises(EngineUnavailable):
        NeedsPickle()


class Reading(dict):
    """A row that notes every column a stage reads of it (copying it, as ``dict(row, ...)`` does, reads nothing)."""

    def __init__(self, row: dict, seen: set[str]):
        super().__init__(row)
        self.seen = seen

    def __getitem__(self, column):
        self.seen.add(column)
        return super().__getitem__(column)

    def get(self, column, default=None):
        self.seen.add(column)
        return super().get(column, default)


@pytest.mark.parametrize("source_id", SAMPLE_SOURCES)
def test_each_stage_reads_and_writes_only_what_it_declares(source_id, samples_dir, monkeypatch):
    """Each sample source's stages (its expert's too, without retrieval: no index here) on a few of its
    inputs, one row at a time: what a stage reads of a row and what it changes are declared."""
    monkeypatch.setenv("MEDTRINITY_SAMPLES_DIR", str(samples_dir))
    settings = load_settings().with_changes(knowledge_top_k=0, runner="inprocess")
    source = load_catalog(settings)[source_id]
    stages = build_stages(source, settings)
    inputs = list_inputs(source, settings)
    usable = [row for row in inputs if not row.get("reject_reason")]
    unannotated = [row for row in usable if "imagesTs/" in row["source_relpath"]]  # for the CT source's expert
    rows = list({row["source_relpath"]: row for row in usable[:1] + usable[-2:] + unannotated[:1]}.values())
    for stage in stages:
        stage.setup()
        out = []
        for row in rows:
            seen: set[str] = set()
            made = stage([Reading(row, seen)])
            undeclared = seen - set(stage.reads) - set(stage.reads_if_present) - set(stage.writes) - ACCOUNTING
            assert not undeclared, (stage.name, "reads", undeclared)
            for new in made:
                changed = {column for column in new if column not in row or new[column] is not row[column]}
                assert not changed - set(stage.writes) - ACCOUNTING, (stage.name, "writes", changed)
            out += [dict(new) for new in made]
        assert out
        rows = [row for row in out if not (row.get("reject_reason") or row.get("quarantine_reasons"))]
        assert rows, (stage.name, out[0].get("reject_reason") or out[0].get("quarantine_reasons"))
