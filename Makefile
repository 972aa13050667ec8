# soundalike: the two commands of the README.
#   make demo   create/refresh .venv, install everything, build the demo catalog
#   make test   create/refresh .venv with test extras, install Debian test packages, run the suite

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
PY        := $(BIN)/python
STAMP     := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test
# Debian packages the tests use: a headless browser for the web page, PulseAudio for a
# virtual microphone, PortAudio for sounddevice, ALSA's pulse plugin so PortAudio reaches it,
# the PostgreSQL server the catalog tests start privately.
DEB_TEST  := chromium chromium-driver pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins postgresql
PYTEST_ARGS ?= -n 2

.PHONY: demo test venv venv-test deb-test clean help

help:
	@echo "make demo    set up .venv and build a demo catalog"
	@echo "make test    set up .venv (+ test deps, Debian packages) and run the test suite"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch is pinned exactly and installed first (pip takes the local CPU wheel); the musicnn
# wheel is installed without its dependencies: we only read its checkpoint files, so its
# stale pins (TensorFlow 1, NumPy < 1.17) are expected to be unmet: --no-warn-conflicts.
PIP_INSTALL := $(BIN)/pip install --quiet --no-warn-conflicts

$(STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e .
	$(PIP_INSTALL) --no-deps musicnn==0.1.0
	touch $@

$(TESTSTAMP): $(STAMP) pyproject.toml
	$(PIP_INSTALL) -e '.[test]'
	touch $@

venv: $(STAMP)

venv-test: $(TESTSTAMP)

deb-test:
	@missing=""; for p in $(DEB_TEST); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: venv
	$(BIN)/soundalike demo
	@echo "(the commands above run in the project's environment: . $(VENV)/bin/activate)"

test: venv-test deb-test
	SOUNDALIKE_STRICT_DEPS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
