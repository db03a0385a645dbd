# Two commands for a fresh clone:  `make test`  and  `make run`.
# Both create .venv (from Python 3.11) and install requirements.txt into it first, once.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= landmarks
# PyTorch CPU threads must not busy-wait on a 2-core machine: see src/__init__.py.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: test run report app clean-venv

# make report: the notebooks, in course order (the app uses the models the first two export).
NOTEBOOKS := cnn_from_scratch.ipynb transfer_learning.ipynb app.ipynb
# QUICK=1 keeps everything it writes (synthetic data, checkpoints, pages) in build/quick/, apart from real work.
QUICK_DIR := build/quick
ifeq ($(QUICK),1)
REPORT_DIR := $(QUICK_DIR)/reports
REPORT_ENV := LANDMARK_QUICK=1 LANDMARK_DATASET=landmarks LANDMARK_DATA=$(abspath $(QUICK_DIR)/data) \
	LANDMARK_CHECKPOINTS=$(abspath $(QUICK_DIR)/checkpoints)
else
REPORT_DIR := reports
REPORT_ENV := LANDMARK_DATASET=$(DATASET) $(if $(EPOCHS),LANDMARK_EPOCHS=$(EPOCHS))
endif

# TORCH=cpu (`make test TORCH=cpu`, `make run TORCH=cpu`): on Linux without an NVIDIA GPU, install PyTorch's CPU-only
# build first. PyPI's Linux wheel brings the CUDA libraries (4.1 GB of a 6.3 GB .venv, measured with du), which a CPU
# never uses. It needs download.pytorch.org, so CI (and the default) installs PyPI's wheel.
TORCH ?=
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

# Re-installs whenever requirements.txt changes.
$(VENV)/installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(if $(filter cpu,$(TORCH)),$(BIN)/python -m pip install --disable-pip-version-check -q --index-url \
		$(TORCH_CPU_INDEX) torch==2.14.1+cpu torchvision==0.29.1+cpu)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

## make test [TEST_WORKERS=N|auto]: set up .venv if needed, then run the test suite in TEST_WORKERS processes
## (pytest-xdist). 2 by default: on the 2-core development machine the suite took 229 s instead of 401 s in one
## process (the same clean clone, one run after the other); many tests wait on subprocesses, kernels and browsers.
TEST_WORKERS ?= 2
test: $(VENV)/installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

## make run [DATASET=landmarks|fashion-mnist] [EPOCHS=N]: the main job. Fetch/verify the data and print a summary,
## run the notebooks (they train both models, test them and export them for the app; HTML reports in reports/), and
## end with a table: each notebook's time and each exported model's test accuracy against its target.
run: $(VENV)/installed
	$(BIN)/python -m src.data --dataset $(DATASET)
	$(MAKE) --no-print-directory report

## make report [QUICK=1]: execute the notebooks top to bottom (a progress bar per notebook) and write reports/report.html,
## the graded report (a PASS/FAIL summary of the course rubric, then the three notebooks), and one page per notebook (a
## full run trains both models: hours on a CPU, minutes on a GPU). QUICK=1: a smoke run in a few minutes, offline, on a small synthetic
## dataset; its data, checkpoints and pages go to build/quick/, so it never touches your data or trained models.
report: $(VENV)/installed | $(if $(filter 1,$(QUICK)),$(QUICK_DIR)/data)
	$(if $(filter 1,$(QUICK)),rm -rf $(QUICK_DIR)/checkpoints)
	$(REPORT_ENV) $(BIN)/python -m src.report --output-dir $(REPORT_DIR) $(NOTEBOOKS)

# The synthetic dataset of make report QUICK=1 (4 classes, 16 + 4 images each), written once.
$(QUICK_DIR)/data: | $(VENV)/installed
	rm -rf $@.tmp
	$(BIN)/python -c "from src.synthetic import make_synthetic_dataset; make_synthetic_dataset('$@.tmp', 4, 16, 4)"
	mv $@.tmp $@

## make app: the app notebook as a standalone web page (Voila) on http://127.0.0.1:8866
app: $(VENV)/installed
	$(BIN)/voila app.ipynb --no-browser --port=8866 --Voila.ip=127.0.0.1

clean-venv:
	rm -rf $(VENV)

.PHONY: web-build web

## make web-build: the app as a static web page in build/web: the models run in the browser (ONNX Runtime Web), no
## Python behind it; any static host can serve the folder. Needs the exported models and Node 18+ with npm (src/web.py).
web-build: $(VENV)/installed
	$(BIN)/python -m src.web build

## make web: build the page, then serve it on http://127.0.0.1:8000
web: $(VENV)/installed
	$(BIN)/python -m src.web build
	$(BIN)/python -m src.web serve --port 8000
