# Fresh machine: `make demo` shows the pipeline end to end; `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SOURCES ?= synthetic_ct_abdomen synthetic_ct_dicom synthetic_dermoscopy synthetic_chest_xray synthetic_pathology_tiles

export MEDTRINITY_SAMPLES_DIR ?= $(CURDIR)/data/samples
export MEDTRINITY_OUTPUT ?= $(CURDIR)/data/output
export MEDTRINITY_KNOWLEDGE_DIR ?= $(CURDIR)/data/knowledge
# standalone starts its scheduler, API server and dag processor as `airflow` from PATH
AIRFLOW_ENV := PATH=$(CURDIR)/$(BIN):$$PATH AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False

.PHONY: install demo lint chromium orthanc realdata test test-fast bench airflow clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[airflow,experts,knowledge,test,dev]'
	touch $@

install: $(VENV)/.installed

.airflow/airflow.db: $(VENV)/.installed
	mkdir -p .airflow
	$(AIRFLOW_ENV) $(BIN)/airflow db migrate > .airflow/migrate.log 2>&1 || (tail -20 .airflow/migrate.log; exit 1)

# The knowledge index DAG on the demo corpus, then each sample source's DAG under `airflow dags test`
# (SQLite, project-local Airflow home), then a summary.
demo: .airflow/airflow.db
	$(BIN)/medtrinity samples
	@echo "running DAG medtrinity_knowledge_index on the demo corpus (log: .airflow/demo-knowledge.log) ..."
	@$(AIRFLOW_ENV) $(BIN)/airflow dags test medtrinity_knowledge_index > .airflow/demo-knowledge.log 2>&1 \
		|| { tail -40 .airflow/demo-knowledge.log; echo "demo run failed: see .airflow/demo-knowledge.log"; exit 1; }
	@grep -h -E "documents, .* chunks|^collection " .airflow/demo-knowledge.log \
		|| { tail -40 .airflow/demo-knowledge.log; echo "the knowledge index failed: see .airflow/demo-knowledge.log"; exit 1; }
	@echo
	@for source in $(SOURCES); do \
		echo "running DAG medtrinity__$$source with airflow dags test (log: .airflow/demo-$$source.log) ..."; \
		$(AIRFLOW_ENV) $(BIN)/airflow dags test medtrinity__$$source -c '{"force": true}' > .airflow/demo-$$source.log 2>&1 \
			|| { tail -40 .airflow/demo-$$source.log; echo "demo run failed: see .airflow/demo-$$source.log"; exit 1; }; \
		$(BIN)/medtrinity show $$source; \
		echo "output: $(MEDTRINITY_OUTPUT)/sources/$$source"; echo; \
	done
	@echo "running DAG medtrinity_dataset (log: .airflow/demo-dataset.log) ..."
	@$(AIRFLOW_ENV) $(BIN)/airflow dags test medtrinity_dataset > .airflow/demo-dataset.log 2>&1 \
		|| { tail -40 .airflow/demo-dataset.log; echo "demo run failed: see .airflow/demo-dataset.log"; exit 1; }
	@echo "dataset manifest: $(MEDTRINITY_OUTPUT)/dataset/manifest.json; dataset card: $(MEDTRINITY_OUTPUT)/README.md"
	@echo "load it all with datasets.load_dataset('$(MEDTRINITY_OUTPUT)')"

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The dataset browser's test drives Debian's Chromium through Playwright (no browser download).
# Without root or apt the test says it is skipped and why.
chromium:
	@test -x /usr/bin/chromium || apt-get install -y -q chromium > /dev/null 2>&1 \
		|| (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q chromium > /dev/null 2>&1) \
		|| echo "could not install Debian's chromium: the dataset browser test will be skipped"

# The DICOMweb tests run Debian's Orthanc with its DICOMweb plugin on loopback (their own port and storage).
# Without root or apt the tests say they are skipped and why.
orthanc:
	@test -x /usr/sbin/Orthanc -a -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so \
		|| apt-get install -y -q orthanc orthanc-dicomweb > /dev/null 2>&1 \
		|| (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q orthanc orthanc-dicomweb > /dev/null 2>&1) \
		|| echo "could not install Debian's orthanc and orthanc-dicomweb: the DICOMweb tests will be skipped"

# The real-imaging tests read Debian's invesalius-examples (a head CT with bone masks); without root or apt
# they skip, saying so.
realdata:
	@test -f /usr/share/doc/invesalius-examples/examples/Cranium.inv3 \
		|| apt-get install -y -q invesalius-examples > /dev/null 2>&1 \
		|| (apt-get update -q > /dev/null 2>&1 && apt-get install -y -q invesalius-examples > /dev/null 2>&1) \
		|| echo "could not install Debian's invesalius-examples: the head CT tests will be skipped"

# The whole suite, tier by tier: unit (no servers), integration (pipeline runs in process and on Ray),
# system (Airflow, Celery on PostgreSQL and Redis, llama.cpp, moto, Chromium).
test: lint chromium orthanc realdata
	$(BIN)/python -m pytest tests/unit tests/integration tests/system

# The unit tier alone: a minute or two, for the edit-test loop.
test-fast: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests/unit -q

bench: $(VENV)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/roi.py
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/validation.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/real_dicom.py

# The Airflow UI with the project's DAGs and plugins: `airflow standalone` on SQLite.
airflow: .airflow/airflow.db
	$(BIN)/medtrinity samples
	$(BIN)/medtrinity knowledge index
	@echo "Airflow UI: http://localhost:8080  (user admin; the password is printed on the first start and kept in .airflow/simple_auth_manager_passwords.json.generated)"
	@echo "Dataset browser: Browse > Dataset browser in the UI, or http://localhost:8080/medtrinity/"
	$(AIRFLOW_ENV) $(BIN)/airflow standalone

clean:
	rm -rf data .airflow test-artifacts
