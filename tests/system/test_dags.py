"""DAG integrity over a DagBag, and the DAG file's promise to stay light at parse time."""

import json
import re
import subprocess
import sys

import pytest

from medtrinity_tasks.sources.catalog import load_catalog
from tests.support.servers import BIN, REPO, airflow_env, airflow_in_process

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dagbag(airflow_home):
    with airflow_in_process(airflow_home):
        from airflow.dag_processing.dagbag import DagBag

        yield DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_an_invalid_catalog_entry_is_one_import_error_naming_file_and_field(airflow_home, tmp_path):
    import yaml

    from medtrinity_tasks.sources.catalog import get_source

    (site := tmp_path / "site").mkdir()
    entry = get_source("synthetic_dermoscopy").model_dump()
    (site / "site_skin.yaml").write_text(yaml.safe_dump(dict(entry, id="site_skin")))
    (site / "site_broken.yaml").write_text(yaml.safe_dump(dict(entry, id="site_broken", modality=None)))
    with airflow_in_process(airflow_home) as patch:
        patch.setenv("MEDTRINITY_CATALOG_DIRS", str(site))
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
    (errors_file,) = bag.import_errors  # the other sources' DAGs are untouched
    assert errors_file.endswith("medtrinity_catalog_errors.py")
    assert "site_broken.yaml is invalid: modality: Input should be a valid string" in bag.import_errors[errors_file]
    assert "medtrinity__site_skin" in bag.dag_ids and "medtrinity__site_broken" not in bag.dag_ids
    assert set(load_catalog()) - {"site_skin"} <= {d.removeprefix("medtrinity__") for d in bag.dag_ids}


def test_one_dag_per_catalog_source_and_the_backfill(dagbag):
    sources = {f"medtrinity__{source_id}" for source_id in load_catalog()}
    assert set(dagbag.dag_ids) == sources | {"medtrinity_backfill", "medtrinity_dataset", "medtrinity_knowledge_index"}
    backfill = dagbag.get_dag("medtrinity_backfill")
    assert set(backfill.task_ids) == {"find", "trigger"} and set(backfill.params) == {"dry_run", "output_uri"}
    knowledge = dagbag.get_dag("medtrinity_knowledge_index")
    assert set(knowledge.task_ids) == {"index", "report"} and knowledge.max_active_runs == 1  # one local writer
    assert set(knowledge.params) == {"corpus", "location", "format", "recreate"}


@pytest.mark.parametrize("source_id", sorted(load_catalog()))
def test_source_dag_shape(dagbag, source_id):
    entry = load_catalog()[source_id]
    dag = dagbag.get_dag(f"medtrinity__{source_id}")
    assert {"medtrinity", "source", entry.modality, entry.body_region} <= set(dag.tags)
    assert set(dag.task_ids) == {"plan", "process", "gate", "publish", "summary"}
    assert dag.get_task("plan").downstream_task_ids == {"process", "gate", "publish", "summary"}
    assert dag.get_task("gate").downstream_task_ids == {"publish"}
    assert dag.get_task("publish").downstream_task_ids == {"summary"}
    assert dag.get_task("plan").is_setup and dag.get_task("summary").is_teardown  # it reports on failed runs too
    assert dag.get_task("summary").trigger_rule == "all_done_setup_success"
    for task in dag.tasks:
        assert task.retries == (0 if task.task_id in ("gate", "summary") else 2) and task.retry_exponential_backoff
        callbacks = task.on_failure_callback
        assert [getattr(c, "__name__", type(c).__name__) for c in callbacks] == ["record_failure"]  # no mail unless set
    assert dag.get_task("process").max_active_tis_per_dagrun == 1  # one local Ray per shard task
    assert dag.get_task("process").map_index_template == "{{ shard_id }}"
    assert [o.uri for o in dag.get_task("publish").outlets] == [f"medtrinity://sources/{source_id}"]
    assert set(dag.params) == {"output_uri", "limit", "shard_size", "force", "engine", "dry_run", "wait_for_lease"}
    assert dag.doc_md and entry.licence in dag.doc_md


@pytest.mark.parametrize(
    "path", sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("dags/*.py"), *REPO.glob("plugins/*.py")])
)
def test_dag_and_plugin_files_import_nothing_heavy(path):
    """Every Airflow component parses DAG files and loads plugins, task processes included."""
    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "heavy = [m for m in ('ray', 'great_expectations', 'nibabel', 'pyarrow', 'boto3', 'PIL',"
        " 'airflow.api_fastapi.core_api.security') if m in sys.modules];"
        "print(heavy)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_shard_tasks_running_a_gpu_expert_take_the_gpu_pool(airflow_home):
    with airflow_in_process(airflow_home) as patch:
        patch.setenv("MEDTRINITY_EXPERT_GPUS", "1")
        patch.setenv("MEDTRINITY_GPU_POOL", "expert_gpus")
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
    process = {dag_id: dag.get_task("process").pool for dag_id, dag in bag.dags.items() if "__" in dag_id}
    assert process["medtrinity__synthetic_ct_abdomen"] == "expert_gpus"  # the sample expert covers it
    assert process["medtrinity__kits19"] == "default_pool"  # no expert: nothing on a GPU


def test_the_browser_plugin_registers_its_app_and_its_navigation_entry(airflow_home):
    done = subprocess.run([str(BIN / "airflow"), "plugins", "--output", "json"], env=airflow_env(airflow_home),
                          capture_output=True, text=True, check=True)  # fmt: skip
    plugin = next(p for p in json.loads(done.stdout) if p["name"] == "medtrinity_browser")
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/medtrinity"]
    assert [(v["name"], v["href"], v["destination"]) for v in plugin["external_views"]] == [
        ("Dataset browser", "medtrinity/", "nav")
    ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"limit": -1}, "-1 is less than the minimum of 0"),
        ({"engine": "gpt"}, "'gpt' is not one of ['template', 'openai', 'vllm']"),
        ({"dry_run": "yes"}, "'yes' is not of type 'boolean'"),
    ],
)
def test_the_trigger_form_refuses_invalid_params_with_the_reason(dagbag, change, reason):
    import copy

    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.get_dag("medtrinity__synthetic_dermoscopy").params)
    with pytest.raises(ParamValidationError, match=re.escape(reason)):
        params.update(change)
        params.validate()
