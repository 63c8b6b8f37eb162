# edgeslim.jetson — developer entry points. Quick start: `make demo`, `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
# Podman adjustments for this testbed (runtime runc, ulimits): see tests/sim/containers.conf.
export CONTAINERS_CONF := $(CURDIR)/tests/sim/containers.conf
# The testbed's Ansible configuration (the root ansible.cfg is the production one: host keys checked).
export ANSIBLE_CONFIG := $(CURDIR)/tests/ansible.cfg
COLLECTION_LINK := .collections/ansible_collections/edgeslim/jetson
# Size of the simulated services: 1.0 = published figures (desktop ~800 MB); tests use less.
SIM_SCALE ?= 0.1
export EDGESLIM_SIM_SCALE ?= $(SIM_SCALE)

.PHONY: help check venv host link lint ruff ansible-lint device-compat sanity unit unit-device molecule publish-check test demo image fleet-up fleet-down build clean \
	boot-host boot-image test-boot test-boot-ci test-boot-repeat

help:
	@echo "make demo    bring up a simulated fleet and slim the warehouse robots"
	@echo "make test    lint + sanity + unit tests + Molecule scenarios"
	@echo "make check   the inner loop (< 5 min): lint, unit tests on every device Python, one Molecule scenario"
	@echo "make test-boot  emulated-boot lane: the boot layers on an arm64 guest under QEMU (docs/emulated-boot.md)"
	@echo "make test-boot-ci  the lane without its two single-layer tests (what CI runs after make test)"
	@echo "make test-boot-repeat RUNS=5  the lane RUNS times in a row, stopping at the first failure (build/boot/runs.log)"
	@echo "make unit-device  device-code unit tests on Python 3.8, 3.10 and 3.12 (JetPack 5, 6, 7)"
	@echo "make venv | host | image | fleet-up | fleet-down | unit | lint | sanity | molecule | build | boot-image"

$(BIN)/.stamp: requirements-dev.txt tests/sim/vendor_podman_collection.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/python tests/sim/vendor_podman_collection.py
	touch $@

venv: $(BIN)/.stamp link

# Resolve edgeslim.jetson.* from this checkout without installing it for the testbed (tests/ansible.cfg collections_path,
# Molecule's ANSIBLE_COLLECTIONS_PATH); playbooks find the committed collections/ link next to them anyway.
link:
	@mkdir -p $(dir $(COLLECTION_LINK))
	@[ -L $(COLLECTION_LINK) ] || ln -sfn ../../.. $(COLLECTION_LINK)

host:
	@bash tests/sim/testbed.sh

ruff: venv
	ruff check .
	ruff format --check .

ansible-lint: venv
	ansible-lint

# Device code (modules, module_utils, the boot-commit checker) must run on JetPack 5's Python 3.8.
device-compat: venv
	bash tests/device-compat.sh

lint: ruff ansible-lint device-compat

sanity: venv host
	bash tests/sanity.sh

# Host tests on the controller's Python, then the device code's tests on each JetPack release's Python.
unit: venv
	pytest -q tests/unit
	bash tests/unit-device.sh

unit-device: venv
	bash tests/unit-device.sh

image: venv host
	bash tests/sim/build-image.sh

# `make fleet-up FLEET=tests/sim/fleets/demo.yml` (default) or any spec; writes inventories/sim/hosts.yml.

molecule: venv host image
	bash tests/molecule.sh

# Galaxy / Automation Hub readiness (docs/publishing.md): changelog, docs site, tarball, galaxy-importer,
# antsibull-docs; its tools in their own venv (.cache/publish-venv).
publish-check:
	bash tests/publish-check.sh

test: lint sanity unit molecule publish-check

# The inner loop before each commit (target: under 5 minutes): lint, the unit tests on every device Python (side by
# side, tests/check.sh), and one container scenario (facts: every simulated variant boots and its modules run on its
# release's Python).
CHECK_SCENARIO ?= facts
check: venv host
	bash tests/check.sh $(CHECK_SCENARIO)

# Emulated-boot lane (docs/emulated-boot.md): arm64 guest under QEMU TCG booting through extlinux.conf. Serial only
# (one emulator at a time); the image is cached in /var/cache/edgeslim-boot/<recipe hash>.
boot-host:
	@bash tests/boot/host.sh

boot-image: venv boot-host
	$(BIN)/python tests/boot/image.py

test-boot: venv boot-host
	@mkdir -p build/boot
	$(BIN)/python tests/boot/image.py
	$(BIN)/pytest -v -p no:cacheprovider tests/boot --junitxml=build/boot/junit.xml $(BOOT_PYTEST_ARGS)

# CI's share of the lane (.ci/run, after `make test`): every test but the two single-layer ones marked full_lane,
# which the 90-minute budget cannot hold beside `make test` (docs/emulated-boot.md, "CI").
test-boot-ci:
	$(MAKE) test-boot BOOT_PYTEST_ARGS='-m "not full_lane"'

RUNS ?= 5
test-boot-repeat: venv boot-host
	bash tests/boot/repeat.sh $(RUNS)

fleet-up: venv host image
	$(BIN)/python tests/sim/fleet.py up --spec $${FLEET:-tests/sim/fleets/demo.yml}

fleet-down: venv
	$(BIN)/python tests/sim/fleet.py down --all

demo: venv host image
	bash tests/demo.sh

build: venv
	mkdir -p build && ansible-galaxy collection build --force --output-path build

clean:
	-$(BIN)/python tests/sim/fleet.py down --all 2>/dev/null
	rm -rf build .cache
