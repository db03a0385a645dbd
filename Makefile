# Two commands for a fresh clone:  `make test`  and  `make run`.
# Both create .venv (from Python 3.11) and install requirements.txt into it first, once.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DATASET ?= landmarks
# PyTorch CPU threads must not busy-wait on a 2-core machine: see src/__init__.py.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: test run app clean-venv

# Re-installs whenever requirements.txt changes.
$(VENV)/installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

## make test: set up .venv if needed, then run the test suite (a few minutes on a 2-core laptop).
test: $(VENV)/installed
	$(BIN)/python -m pytest

## make run [DATASET=landmarks|fashion-mnist] [EPOCHS=N]: fetch/verify the data, print a summary of it, then train
## the from-scratch CNN and the transfer-learning model; each prints its test accuracy and keeps its best checkpoint.
run: $(VENV)/installed
	$(BIN)/python -m src.data --dataset $(DATASET)
	$(BIN)/python -m src.train --model scratch --dataset $(DATASET) $(if $(EPOCHS),--epochs $(EPOCHS))
	$(BIN)/python -m src.train --model efficientnet_lite0 --dataset $(DATASET) $(if $(EPOCHS),--epochs $(EPOCHS))

## make app: the app notebook as a standalone web page (Voila) on http://127.0.0.1:8866
app: $(VENV)/installed
	$(BIN)/voila app.ipynb --no-browser --port=8866 --Voila.ip=127.0.0.1

clean-venv:
	rm -rf $(VENV)
