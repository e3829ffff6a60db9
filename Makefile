# All the set-up a fresh machine needs: `make train` and `make test` create .venv when it is
# missing and install the project (editable) with its test tools before they run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: train test test-cluster mlflow lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slurm and not mlflow_server" $(PYTEST_ARGS)

# The engines users run on, started and stopped by the tests: a one-node SLURM cluster
# (tests/cluster/slurm.sh: root and apt-get, else skipped with the reason) and an MLflow server.
# MLflow's UI and server have an environment of their own (`make mlflow`): they need SQLAlchemy 2,
# which the Optuna sweeper's optuna 2.x does not take.
MLFLOW_SERVER := .cache/mlflow-server
mlflow: $(MLFLOW_SERVER)/.installed

$(MLFLOW_SERVER)/.installed: tests/cluster/mlflow-server.txt
	$(PYTHON) -m venv $(MLFLOW_SERVER)
	$(MLFLOW_SERVER)/bin/python -m pip install --quiet -r tests/cluster/mlflow-server.txt
	touch $@

test-cluster: $(STAMP) $(MLFLOW_SERVER)/.installed
	HF_HUB_OFFLINE=1 MLFLOW_SERVER_BIN=$(CURDIR)/$(MLFLOW_SERVER)/bin/mlflow $(BIN)/python -m pytest -q \
		-m "slurm or mlflow_server" tests/test_slurm.py tests/test_mlflow_server.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
