# osmsat — set-up, tests, the demo and per-region targets.
#   make demo                      install, generate the sample region, run the whole pipeline (offline, CPU)
#   make test                      install, then lint (ruff, mypy) and run the test suite
#   make masks REGION=helsinki     run a region up to its label masks
#   make predict REGION=demo       predict every tile with imagery (predictions/z/x/y.png) + model/metrics.json
#   make export REGION=demo        ONNX + STAC mlm model card in data/<region>/model/export/
#   make bench                     benchmarks (speed and peak memory; not tests)

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
REGION  ?= helsinki
WORKERS ?= 2
SHARED  := ../shared/data
RUN     := LUIGI_CONFIG_PARSER=toml LUIGI_CONFIG_PATH=configs/luigi.toml $(PY) -m tasks

.PHONY: install test lint demo masks imagery region helsinki bench clean osmium-tool predict export train

install: $(VENV)/.installed osmium-tool

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

lint: install
	$(VENV)/bin/ruff check pipeline tasks tests bench scripts
	$(VENV)/bin/mypy pipeline tasks

test: lint
	$(PY) -m pytest

demo: install
	$(RUN) RegionPipeline --config configs/demo.toml --workers $(WORKERS)

# real extracts shipped beside the project (../shared/data) are linked, not copied
data/%.osm.pbf:
	@name=$$(basename $@ .osm.pbf); if [ -f $(SHARED)/osm/$$name.osm.pbf ]; then \
	  mkdir -p $(@D) && ln -sf $(abspath $(SHARED))/osm/$$name.osm.pbf $@; fi

masks: install data/$(REGION)/$(REGION).osm.pbf
	$(RUN) MasksAll --config configs/$(REGION).toml --workers $(WORKERS)

region: install data/$(REGION)/$(REGION).osm.pbf
	$(RUN) RegionPipeline --config configs/$(REGION).toml --workers $(WORKERS)

train: install
	$(RUN) TrainModel --config configs/$(REGION).toml --workers $(WORKERS)

predict: install
	$(RUN) EvaluateModel --config configs/$(REGION).toml --workers $(WORKERS)

export: install
	$(RUN) ExportModel --config configs/$(REGION).toml --workers $(WORKERS)

helsinki:
	$(MAKE) region REGION=helsinki

bench: install
	$(PY) -m bench.bench_extract
	$(PY) -m bench.bench_cover_masks
	$(PY) -m bench.bench_imagery
	$(PY) -m bench.bench_synthetic
	$(PY) -m bench.bench_train
	$(PY) -m bench.bench_predict

clean:
	rm -rf data/*/ bench/out
