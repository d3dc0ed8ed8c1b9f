"""The knowledge index DAG: build or refresh one corpus in the knowledge base (Qdrant).

``index`` reads the corpus (MedRAG chunk JSON lines, PubMed baseline XML, or folders of text and
Markdown) from a path or s3:// URI, chunks what is not yet chunked, embeds what is new or changed,
and upserts it; every rejected document is counted by reason. ``report`` logs the counts. One run
at a time: a local-mode store has one writer.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from medtrinity_tasks.airflow_glue.assets import KNOWLEDGE_ASSET
from medtrinity_tasks.airflow_glue.defaults import task_defaults


@dag(
    dag_id="medtrinity_knowledge_index",
    description="Build or refresh a corpus in the medical knowledge base",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=task_defaults(),
    tags=["medtrinity", "knowledge"],
    params={
        "corpus": Param(
            "demo", type="string", minLength=1, description="The corpus's name (textbooks, statpearls, pubmed, ...)"
        ),
        "location": Param("", type="string", description="A file, directory or s3:// URI; empty: the demo corpus"),
        "format": Param("auto", enum=["auto", "medrag", "pubmed", "text"], description="auto: by file name"),
        "recreate": Param(False, type="boolean", description="Drop the whole collection and build it anew"),
    },
    doc_md=__doc__,
)
def medtrinity_knowledge_index():
    @task(outlets=[KNOWLEDGE_ASSET])
    def index() -> dict:
        from medtrinity_tasks.config import load_settings
        from medtrinity_tasks.knowledge.index import index_corpus

        params = get_current_context()["params"]
        return index_corpus(
            params["location"] or None,
            params["corpus"],
            load_settings(),
            fmt=params["format"],
            recreate=params["recreate"],
        )

    @task(retries=0)
    def report(result: dict) -> None:
        from medtrinity_tasks.knowledge.index import summary_lines

        print("\n".join(summary_lines(result)))

    report(index())


medtrinity_knowledge_index()
