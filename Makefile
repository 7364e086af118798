# osmsat — set-up, tests, the demo and per-region targets.
#   make demo                      install, generate the sample region, run the whole pipeline (offline, CPU)
#   make test                      install, then lint (ruff, mypy) and run the test suite
#   make masks REGION=helsinki     run a region up to its label masks
#   make bench                     benchmarks (speed and peak memory; not tests)
#   make verify REGION=helsinki    check every tile's sha256 against its index; redo damaged tiles
#   make prune REGION=helsinki     delete tiles (and shard manifests) that today's index does not list
#   make clean-tmp                 delete scratch folders and temporary files that killed runs left

PYTHON  ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
REGION  ?= helsinki
WORKERS ?= 2
SHARED  := ../shared/data
RUN     := LUIGI_CONFIG_PARSER=toml LUIGI_CONFIG_PATH=configs/luigi.toml $(PY) -m tasks

.PHONY: install test lint demo masks imagery region helsinki bench clean clean-tmp verify prune osmium-tool browser qgis compare

install: $(VENV)/.installed osmium-tool browser qgis

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

# predictions (or masks, [vectorize] source) -> predictions.geojson/.gpkg -> compare/ + <region>.qgs
compare: install data/$(REGION)/$(REGION).osm.pbf
	$(RUN) CompareWithOSM --config configs/$(REGION).toml --workers $(WORKERS)

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

helsinki:
	$(MAKE) region REGION=helsinki

verify: install
	$(RUN) Verify --config configs/$(REGION).toml --workers $(WORKERS)

prune: install
	$(RUN) Prune --config configs/$(REGION).toml

# never while a run is going on: it also deletes the scratch of live runs
clean-tmp:
	@[ ! -d data ] || { find data -type d -name _tmp -prune -exec rm -rf {} + ; \
	  find data -type f -name '.*.tmp*' -delete ; find data -type f -path '*/_manifests/*.lock' -delete ; }

bench: install
	$(PY) -m bench.bench_extract
	$(PY) -m bench.bench_cover_masks
	$(PY) -m bench.bench_imagery
	$(PY) -m bench.bench_download
	$(PY) -m bench.bench_peers
	$(PY) -m bench.bench_synthetic
	$(PY) -m bench.bench_byod

	$(PY) -m bench.bench_vectorize

clean:
	rm -rf data/*/ bench/out
