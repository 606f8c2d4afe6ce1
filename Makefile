# The two commands of the README. Each creates the virtual environment it needs.
#   make demo   the main job end to end on the embedded defaults
#   make test   the test suite
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test,beam]'
	touch $(STAMP)

demo: $(STAMP)
	rm -rf demo
	$(VENV)/bin/tfp-vae demo --out demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf demo runs models
