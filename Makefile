# Two commands set everything up on a fresh machine:
#   make demo   installs lalmbench into .venv and runs the offline demo (the main job on its default)
#   make test   installs lalmbench with the test extras into .venv and runs the test suite
# TORCH selects the PyTorch requirement: the pinned CPU build by default; on a GPU machine use
#   make demo TORCH=torch
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP = $(VENV)/bin/pip
# The default environment's versions (constraints.txt; the published system's: constraints-published.txt); CONSTRAINTS= installs without them.
CONSTRAINTS ?= -c constraints.txt

.PHONY: install install-test demo test rehearsal clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet $(CONSTRAINTS) -e .

install-test: $(VENV)/bin/python
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet $(CONSTRAINTS) -e ".[test,captions,gguf,tensorboard]"

demo: install
	$(VENV)/bin/lalmbench demo

test: install-test
	$(VENV)/bin/python -m pytest -q

# The dress rehearsal: task1 and task2 end to end on a loopback mirror of the real data (16 min on 2 quiet cores).
rehearsal: install-test
	$(VENV)/bin/python scripts/rehearsal/rehearse.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache
