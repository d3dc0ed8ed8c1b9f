"""Airflow in its production shape: PostgreSQL as metadata database, the CeleryExecutor with Redis as
broker, and api-server, scheduler, dag-processor and a Celery worker as separate processes, running
two sources' DAGs at once. Needs the machine's PostgreSQL (127.0.0.1:5432, trust auth) and Redis
(127.0.0.1:6379); says so and skips when either is absent."""

import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from tests.support.servers import BIN, REPO, free_port

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
PG_USER = os.environ.get("PGUSER", "postgres")
SOURCES = ("synthetic_dermoscopy", "synthetic_pathology_tiles")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def postgres_database():
    if not _listening(5432):
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432: the production-shaped Airflow test needs it")
    import psycopg2

    name = f"medtrinity_airflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(host="127.0.0.1", dbname="test", user=PG_USER)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_USER}@127.0.0.1:5432/{name}"
    finally:
        admin.cursor().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def test_celery_workers_on_postgres_run_two_sources_at_once(postgres_database, samples_dir, tmp_path):
    if not _listening(6379):
        pytest.skip("Redis is not listening on 127.0.0.1:6379: the production-shaped Airflow test needs it")
    import psycopg2

    port = free_port()
    queue = f"medtrinity-{uuid.uuid4().hex[:8]}"  # keeps this worker off any other Celery queue on the Redis
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{postgres_database}",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{postgres_database}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "MEDTRINITY_SAMPLES_DIR": str(samples_dir),
        "MEDTRINITY_OUTPUT": str(tmp_path / "out"),
        "MEDTRINITY_RUNNER": "inprocess",  # two tasks on a 2-core machine: no local Ray per task
    }
    airflow = str(BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    commands = {
        "api-server": [airflow, "api-server", "--port", str(port)],
        "scheduler": [airflow, "scheduler"],
        "dag-processor": [airflow, "dag-processor"],
        "worker": [airflow, "celery", "worker", "--concurrency", "2", "--queues", queue],
    }
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in commands}
    processes = {
        name: subprocess.Popen(command, env=env, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True)
        for name, command in commands.items()
    }
    database = psycopg2.connect(f"postgresql://{postgres_database}")
    database.autocommit = True
    try:
        deadline = time.monotonic() + 240
        dag_ids = [f"medtrinity__{source_id}" for source_id in SOURCES]
        while time.monotonic() < deadline:  # the dag-processor must have parsed the DAGs
            cursor = database.cursor()
            cursor.execute("SELECT count(*) FROM dag WHERE dag_id = ANY(%s)", (dag_ids,))
            if cursor.fetchone()[0] == len(dag_ids):
                break
            time.sleep(2)
        for dag_id in dag_ids:
            subprocess.run([airflow, "dags", "unpause", dag_id], env=env, check=True, capture_output=True)
            subprocess.run([airflow, "dags", "trigger", dag_id], env=env, check=True, capture_output=True)
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            cursor = database.cursor()
            cursor.execute("SELECT dag_id, state FROM dag_run WHERE dag_id = ANY(%s)", (dag_ids,))
            states = dict(cursor.fetchall())
            if len(states) == len(dag_ids) and all(state in ("success", "failed") for state in states.values()):
                break
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited: {(tmp_path / f'{name}.log').read_text()[-3000:]}"
            time.sleep(3)
        assert states == dict.fromkeys(dag_ids, "success"), (states, (tmp_path / "worker.log").read_text()[-3000:])
        cursor = database.cursor()
        cursor.execute(
            "SELECT DISTINCT hostname, queue FROM task_instance WHERE dag_id = ANY(%s) AND state = 'success'",
            (dag_ids,),
        )
        assert {row[1] for row in cursor.fetchall()} == {queue}  # every task ran through the Celery queue
        for source_id in SOURCES:
            assert (tmp_path / "out" / "sources" / source_id / "manifest.json").is_file()
    finally:
        database.close()
        for process in processes.values():
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        for handle in logs.values():
            handle.close()
