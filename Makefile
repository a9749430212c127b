# Two commands for a fresh machine (Python 3.10+ with venv; no conda, no GPU needed):
#   make demo   - create .venv if missing, install, detect faces, poses and meshes in a generated sample video
#   make test   - the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# setuptools warns about every editable install with mapped package folders; nothing is wrong, so keep it quiet
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/make_demo_video.py $(DEMO_DIR)/astronauts.mp4
	@# --max-size 1280: the clip's full resolution, so the smallest of its three faces is found too (videos default to 640)
	$(PY) scripts/detect.py $(DEMO_DIR)/astronauts.mp4 --mesh --max-size 1280 --output $(DEMO_DIR)/astronauts_faces.mp4 --json $(DEMO_DIR)/astronauts_faces.jsonl
	@echo "annotated video: $(DEMO_DIR)/astronauts_faces.mp4, detections: $(DEMO_DIR)/astronauts_faces.jsonl"

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
