# The two quick-start commands of the README: `make demo` and `make test`.
# Both create ./.venv on first use. On a CPU machine torch is pinned to the CPU build first (a plain `torch`
# requirement would pull a multi-GB CUDA build); on a GPU cluster, set TORCH= to keep your site's CUDA torch:
#   make demo TORCH=
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
EXTRAS ?= dev,mpi,slurm,dali,sim,jam
BIN    := $(VENV)/bin

.PHONY: venv demo test clean-demo

$(BIN)/galmass: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(TORCH),$(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(BIN)/galmass

# Main job end to end on the embedded mock suites: mock → 2-process torchrun training (stars, gas, gas+stars)
# → evaluation on held-out galaxies → report. Rerunning resumes and skips finished work.
demo: venv
	$(BIN)/galmass demo --config configs/quickstart.yaml --nproc 2 --out runs/quickstart

test: venv
	$(BIN)/python -m pytest

clean-demo:
	rm -rf data/quickstart runs/quickstart
