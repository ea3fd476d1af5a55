# Two commands set everything up on a fresh machine:
#   make demo   installs lalmbench into .venv and runs the offline demo (the main job on its default)
#   make test   installs lalmbench with the test extras into .venv and runs the test suite
#   make test-published   the same suite in .venv-published, installed with the published system's versions
# TORCH selects the PyTorch requirement: the pinned CPU build by default; on a GPU machine use
#   make demo TORCH=torch
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP = $(VENV)/bin/pip
# The default environment's versions (constraints.txt; the published system's: constraints-published.txt); CONSTRAINTS= installs without them.
CONSTRAINTS ?= -c constraints.txt

# The published system's environment (constraints-published.txt: transformers 4.57.3, peft 0.18.0, scikit-learn
# 1.7.2, ...), in a second virtual environment, running the tests whose expected values come from the published
# system (its model, training order, resampler, evaluation batches, task configs, metric values, random draws).
# PUBLISHED_TESTS= (empty) runs the whole suite there.
VENV_PUBLISHED ?= .venv-published
PUBLISHED_TESTS ?= tests/test_official_model.py tests/test_official_stream.py tests/test_official_rng.py \
	tests/test_resample.py tests/test_evaluate.py tests/test_tasks.py tests/test_metrics.py

.PHONY: install install-test demo test test-published rehearsal clean

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

test-published:
	$(MAKE) install-test VENV=$(VENV_PUBLISHED) CONSTRAINTS='-c constraints-published.txt'
	$(VENV_PUBLISHED)/bin/python -m pytest -q $(PUBLISHED_TESTS)

# The dress rehearsal: task1 and task2 end to end on a loopback mirror of the real data (16 min on 2 quiet cores).
rehearsal: install-test
	$(VENV)/bin/python scripts/rehearsal/rehearse.py

clean:
	rm -rf $(VENV) $(VENV_PUBLISHED) demo_output .pytest_cache
