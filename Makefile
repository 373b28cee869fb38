# Set-up, tests, lint and demo from a bare machine with Python 3.11 and Java 17.
#   make setup   create .venv and install the pinned stack (horovod is built: ~5 min once)
#   make test    set up if needed, then run the tests
#   make demo    set up if needed, then run the pipeline on the bundled sample
#   make lint    ruff + mypy
#   make .venv-airflow  a separate venv with Airflow 2.10 for the DAGs in conf/airflow (~1 min)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JAR    := lib/logcrnn/jvm/logcrnn-jvm.jar
JAVA_SRC := $(wildcard lib/logcrnn/jvm/*.java)
export PYSPARK_PYTHON := $(CURDIR)/$(BIN)/python
export PYSPARK_DRIVER_PYTHON := $(CURDIR)/$(BIN)/python

HOROVOD_ENV := HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
	HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 \
	HOROVOD_CMAKE=$(CURDIR)/tools/horovod-cmake MAKEFLAGS=-j2

.PHONY: setup check-java test test-fast lint demo bench-ingest clean .venv-airflow dist

setup: $(STAMP) $(JAR)

check-java:
	@command -v java >/dev/null 2>&1 || { echo "make: Java 17 is required (no 'java' on PATH)" >&2; exit 1; }
	@java -version 2>&1 | head -1 | grep -Eq 'version "17[."]' || { echo "make: Java 17 is required, found: $$(java -version 2>&1 | head -1)" >&2; exit 1; }
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) is required" >&2; exit 1; }

$(STAMP): requirements.txt requirements-dev.txt setup.py tools/horovod-cmake | check-java
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel
	# torch alone first: this exact pin takes the local CPU wheel (any other spec pulls CUDA).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	# petastorm 0.13.1 declares setuptools<70, which torch 2.13 contradicts; its real
	# dependencies are pinned in requirements.txt.
	$(BIN)/pip install --quiet --no-deps petastorm==0.13.1
	# horovod 0.28.1 from source against the installed torch (C++17 fix: tools/horovod-cmake)
	$(HOROVOD_ENV) $(BIN)/pip install --quiet --no-build-isolation horovod==0.28.1
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/python -c "import horovod.torch, petastorm, deltalake, drain3, pyspark, torch"
	touch $(STAMP)

# The project's Spark SQL functions in Java (lib/logcrnn/jvm), compiled against the installed
# pyspark's jars for Java 8 and later.  Optional: on a machine with a JRE and no javac the
# pipeline runs Spark's built-in functions instead (same output, slower).
$(JAR): $(JAVA_SRC) $(STAMP)
	@if command -v javac >/dev/null 2>&1; then \
		rm -rf build/jvm && mkdir -p build/jvm && \
		javac -Xlint:-options --release 8 -d build/jvm $(JAVA_SRC) \
			-cp "$$($(BIN)/python -c 'import pathlib, pyspark; print(pathlib.Path(pyspark.__file__).parent / "jars")')/*" && \
		jar cf $@ -C build/jvm . && echo "built $@"; \
	else \
		echo "make: no javac (a JDK) on PATH: $@ not built, Spark's built-ins stand in" >&2; \
	fi

# Airflow has its own venv: its pins clash with the main stack's (pandas 2.1, numpy 1.26,
# pyarrow 14).  The constraints file is its pip freeze (the GitHub constraints are unreachable).
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW_PINS  := conf/airflow/constraints-3.11.txt

.venv-airflow: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_PINS)
	$(PYTHON) -m venv --clear $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip wheel
	$(AIRFLOW_VENV)/bin/pip install --quiet -c $(AIRFLOW_PINS) apache-airflow==2.10.5 \
		apache-airflow-providers-apache-spark==5.3.4 pyspark==3.5.7
	$(AIRFLOW_VENV)/bin/python -c "import airflow.providers.apache.spark.operators.spark_submit"
	touch $(AIRFLOW_STAMP)

# The application for spark-submit --py-files: the wheel, under a .zip name, because PySpark
# puts only .zip/.egg/.jar archives on the executors' sys.path.
dist: setup
	rm -rf dist && $(BIN)/pip wheel --quiet --no-deps --no-build-isolation --no-index -w dist .
	cp dist/logcrnn-0.1.0-py3-none-any.whl dist/logcrnn-0.1.0.zip
	if [ -f $(JAR) ]; then cp $(JAR) dist/; fi

test: setup .venv-airflow
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check lib jobs tests
	$(BIN)/ruff format --check lib jobs tests
	$(BIN)/mypy lib jobs

demo: setup
	$(BIN)/logcrnn demo

bench-ingest: setup
	$(BIN)/logcrnn bench ingest --lines 10000000

clean:
	rm -rf lake .bench spark-warehouse .pytest_cache .mypy_cache .ruff_cache
