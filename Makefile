# osmsat — set-up, tests, the demo and per-region targets. `make help` lists them.

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
REGION  ?= demo
WORKERS ?= 2
# test processes of `make test` (pytest-xdist): 2 runs the suite in 9.5 min on 2 cores against 16 min in one
TEST_WORKERS ?= 2
SHARED  := ../shared/data
RUN     := LUIGI_CONFIG_PARSER=toml LUIGI_CONFIG_PATH=configs/luigi.toml $(PY) -m tasks
CONFIG  := configs/$(REGION).toml
# every configs/<region>.toml is a target `make <region>` (configs/luigi.toml is Luigi's own)
REGIONS := $(filter-out luigi demo,$(basename $(notdir $(wildcard configs/*.toml))))

# stage targets: make <stage> REGION=<region> runs that stage and what it needs (the task of that stage
# in pipeline/core/stages.py; predict = the evaluate stage's task: tests/test_cli.py keeps them equal)
TASK_masks     := MasksAll
TASK_imagery   := ImageryAll
TASK_split     := SplitDataset
TASK_train     := TrainModel
TASK_predict   := EvaluateModel
TASK_vectorize := MergeFeatures
TASK_compare   := CompareWithOSM
TASK_report    := RegionReport
TASK_export    := ExportModel
TASK_verify    := Verify
TASK_prune     := Prune
STAGES := masks imagery split train predict vectorize compare report export verify prune

.PHONY: help install test lint demo region bench clean clean-tmp osmium-tool browser qgis link-osm \
        $(STAGES) $(REGIONS)

help:
	@echo "make demo                    install, generate the sample region, run the whole pipeline, print the figures"
	@echo "make test                    install, lint (ruff, mypy) and run the test suite"
	@echo "make <region>                the whole pipeline for configs/<region>.toml: $(REGIONS)"
	@echo "make <stage> REGION=<region> one stage and what it needs; stages:"
	@echo "                             $(STAGES)"
	@echo "                             (predict = PredictAll + model/metrics.json; export = ONNX + STAC model card)"
	@echo "make clean-tmp               delete what killed runs left (scratch folders, temporary files, locks under"
	@echo "                             data/, osmsat-*.errors.jsonl in the temp folder); unsafe during a run, so it"
	@echo "                             refuses while a run holds a lock"
	@echo "make bench                   benchmarks (speed, peak memory; side by side with the usual tools)"
	@echo "options: REGION=$(REGION) WORKERS=$(WORKERS) (Luigi worker processes) TEST_WORKERS=$(TEST_WORKERS) (test processes)"

install: $(VENV)/.installed osmium-tool browser qgis
	@# bytecode ahead of time: where PYTHONDONTWRITEBYTECODE is set (many Docker images) every command
	@# would otherwise compile the project's modules again (0.03-0.05 s of each command's start-up)
	@$(PY) -m compileall -q pipeline tasks

# torch comes plainly from the package index (with torchvision, which segmentation-models-pytorch needs)
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

# osmium-tool is only a reference in tests and benchmarks; installed when we may (root + apt)
osmium-tool:
	@command -v osmium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null && apt-get install -y -qq osmium-tool >/dev/null) || \
	  echo "note: osmium-tool not installed; the tests that compare with it will skip"; }

# headless Chromium and its driver: only the report's page test uses them (skipped without)
browser:
	@command -v chromedriver >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "note: chromium not installed; the report's browser test will skip"; }

# PyQGIS (Debian's python3-qgis, QGIS 3.22 on Debian 12; about 90 s) lets a test open the QGIS
# project the compare stage writes; installed when we may (root + apt), else that test skips
qgis:
	@[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import qgis.core' >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  command -v apt-get >/dev/null 2>&1 && (apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-qgis >/dev/null) || \
	  echo "note: python3-qgis not installed; the QGIS project test will skip"; }

lint: install
	$(VENV)/bin/ruff check pipeline tasks tests bench scripts
	$(VENV)/bin/mypy pipeline tasks

test: lint
	$(PY) -m pytest -n $(TEST_WORKERS)

demo: install
	$(RUN) RegionPipeline --config configs/demo.toml --workers $(WORKERS)
	@$(PY) -m tasks.summary --config configs/demo.toml

# real extracts shipped beside the project (../shared/data/osm/<region>.osm.pbf) are linked, not copied
link-osm:
	@f=data/$(REGION)/$(REGION).osm.pbf; if [ ! -e $$f ] && [ -f $(SHARED)/osm/$(REGION).osm.pbf ]; then \
	  mkdir -p data/$(REGION) && ln -sf $(abspath $(SHARED))/osm/$(REGION).osm.pbf $$f; fi

region: install link-osm
	$(RUN) RegionPipeline --config $(CONFIG) --workers $(WORKERS)
	@$(PY) -m tasks.summary --config $(CONFIG)

$(REGIONS):
	@$(MAKE) --no-print-directory region REGION=$@

$(STAGES): install link-osm
	$(RUN) $(TASK_$@) --config $(CONFIG) --workers $(WORKERS)

# it would delete the scratch of live runs: it refuses while a run holds its region's lock (pipeline/core/upkeep.py)
clean-tmp: $(VENV)/.installed
	@$(PY) -m pipeline.core.upkeep clean-tmp data

bench: install
	$(PY) -m bench.bench_startup
	$(PY) -m bench.bench_extract
	$(PY) -m bench.bench_cover_masks
	$(PY) -m bench.bench_imagery
	$(PY) -m bench.bench_download
	$(PY) -m bench.bench_peers
	$(PY) -m bench.bench_synthetic
	$(PY) -m bench.bench_byod
	$(PY) -m bench.bench_vectorize
	$(PY) -m bench.bench_regularize
	$(PY) -m bench.bench_train
	$(PY) -m bench.bench_predict
	$(PY) -m bench.bench_e2e
	$(PY) -m bench.bench_shards
	$(PY) -m bench.bench_compare

clean:
	rm -rf data/*/ bench/out
