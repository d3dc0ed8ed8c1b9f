"""Invalid catalog entries, reported as this file's Airflow DAG import error.

``medtrinity_sources.py`` builds a DAG for every valid catalog entry and leaves invalid ones out;
this file fails to import while any entry is invalid, so the Airflow UI's import errors name each
broken YAML file and field without stopping the other sources' DAGs. It defines no DAG.
"""

from __future__ import annotations

from medtrinity_tasks.sources.catalog import catalog_problems

_problems = catalog_problems()
if _problems:
    raise ImportError(
        "invalid catalog entries (their sources have no DAG until fixed):\n" + "\n".join(_problems.values())
    )
