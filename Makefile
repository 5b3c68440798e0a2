# interapp — `make demo` runs the main job, `make test` runs everything CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo serve test lint typecheck unit bench clean peers js

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: $(STAMP)  ## the main job: the whole claim-1 story on embedded SQLite
	$(BIN)/interapp demo --yes

serve: $(STAMP)  ## one application server on embedded SQLite
	$(BIN)/interapp serve --app arena

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src/interapp

peers:  ## real peer servers for the network tests: Prosody and ejabberd (Debian), Synapse (own venv)
	@missing=""; \
	  command -v prosody >/dev/null 2>&1 || missing="$$missing prosody lua-unbound"; \
	  PATH="$$PATH:/usr/sbin" command -v ejabberdctl >/dev/null 2>&1 || missing="$$missing ejabberd"; \
	  test -z "$$missing" || { \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; }
	@command -v prosody >/dev/null 2>&1 || { echo "FATAL: Prosody is required for the XMPP tests"; exit 1; }
	@PATH="$$PATH:/usr/sbin" command -v ejabberdctl >/dev/null 2>&1 || { echo "FATAL: ejabberd is required for the XMPP tests"; exit 1; }
	@test -x .peers/synapse/bin/python -a -f .peers/synapse/.installed || { \
	  echo "installing Synapse into .peers/synapse (about a minute)"; \
	  $(PYTHON) -m venv .peers/synapse && \
	  .peers/synapse/bin/python -m pip install --quiet 'matrix-synapse[jwt,oidc]' && \
	  touch .peers/synapse/.installed; }

JS := clients/js

$(JS)/node_modules/.package-lock.json: $(JS)/package-lock.json $(JS)/package.json
	cd $(JS) && npm ci --no-audit --no-fund

js: $(JS)/node_modules/.package-lock.json  ## the JavaScript client's dependencies (ws)

unit: $(STAMP) peers js
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit  ## lint, type-check and the whole test suite

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[all,test,bench]'
	touch $@

bench: $(VENV)/.bench-installed peers  ## every benchmark, side by side with Synapse and Prosody
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(JS)/node_modules
