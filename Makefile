# isthmus: `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

# The Python dependencies come from two lockfiles made by pip-compile (pip-tools) from pyproject.toml,
# every file pinned with its sha256: requirements.txt (what isthmus runs with, plus the build backend)
# and requirements-dev.txt (the same pins plus the test and lint tools). `make lock` refreshes both.
LOCK := requirements.txt
DEV_LOCK := requirements-dev.txt
RUNTIME_STAMP := $(VENV)/.isthmus-runtime
DEV_STAMP := $(VENV)/.isthmus-dev
PIP_TOOLS_VERSION := 7.7.0
PIP_COMPILE_FLAGS := --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
	--no-emit-index-url --no-emit-find-links --quiet

.PHONY: all demo test lint gen lock install install-runtime deps deps-demo deps-test clean bench \
	openstack-up openstack-down

all: test

# Debian packages, as "command-it-provides:package". The demo needs etcd (the coordinator's embedded
# default), iproute2 and ping (each site a network namespace when run as root); the suite needs the
# rest too: gobgpd and BIRD as real BGP peers, MariaDB, Keystone, Glance, nova-api and neutron-server for the
# two-region OpenStack the multisite tests run against, networking-l2gw and the openstack CLI for the
# Neutron integration's tests.
DEMO_PACKAGES := etcd:etcd-server ip:iproute2 ping:iputils-ping
TEST_PACKAGES := $(DEMO_PACKAGES) etcdctl:etcd-client gobgpd:gobgpd bird:bird2 systemd-analyze:systemd \
	neutron-server:neutron-server mariadbd:mariadb-server keystone-manage:keystone glance-api:glance-api \
	nova-api:nova-api ssh-keygen:openssh-client openstack:python3-openstackclient \
	/usr/lib/python3/dist-packages/networking_l2gw:python3-networking-l2gw \
	/usr/lib/python3/dist-packages/grpc:python3-grpcio /usr/lib/python3/dist-packages/google/protobuf:python3-protobuf

# Installs, with apt, the packages of $(1) whose command (or, for a path, file) is missing.
define apt_install
	@missing=""; \
	for pair in $(1); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  [ -e "$$cmd" ] || PATH="$$PATH:/usr/sbin:/sbin" command -v $$cmd >/dev/null || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps-demo:
	$(call apt_install,$(DEMO_PACKAGES))

deps-test deps:
	$(call apt_install,$(TEST_PACKAGES))

# A venv that holds exactly the locked versions (pip checks every hash), then isthmus itself, editable,
# built with the locked setuptools (no build isolation, so nothing unlocked is fetched to build it).
define venv_install
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --require-hashes --no-deps -r $(1)
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
endef

$(RUNTIME_STAMP): $(LOCK) pyproject.toml
	$(call venv_install,$(LOCK))
	touch $@

$(DEV_STAMP): $(DEV_LOCK) pyproject.toml
	$(call venv_install,$(DEV_LOCK))
	touch $@ $(RUNTIME_STAMP)

install-runtime: $(RUNTIME_STAMP)

install: $(DEV_STAMP)

demo: deps-demo install-runtime
	$(VPY) -m isthmus.coordinator.demo

test: deps-test install
	$(VPY) -m pytest -q tests

# ruff, then mypy --strict over the package by import name (tests/typecheck.py hands mypy each module
# with the name pyproject.toml's package-dir gives it). tests/test_lint.py runs the same in `make test`.
lint: install
	$(VENV)/bin/ruff check .
	$(VPY) -m tests.typecheck

# Regenerate the committed stubs after editing proto/isthmus/v1/*.proto
# (tests/test_proto_stubs.py fails while they drift).
# contract.binpb is the same contract as a FileDescriptorSet: the Neutron side builds its messages from it
# with whatever protobuf neutron-server's environment has.
gen: install
	$(VPY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
	  --grpc_python_out=proto proto/isthmus/v1/*.proto
	$(VPY) -m grpc_tools.protoc -Iproto --include_imports --descriptor_set_out=proto/isthmus/v1/contract.binpb \
	  proto/isthmus/v1/*.proto

# Refresh both lockfiles to the newest releases pyproject.toml's ranges allow (LOCK_UPGRADE= keeps
# today's pins and only resolves what pyproject.toml changed), then install them and regenerate the
# stubs with the newly locked grpcio-tools, so a refresh never leaves the stubs drifting. Only PyPI is
# asked (local wheel folders and constraints of the machine are set aside), so the lock is the same
# wherever it is made.
LOCK_UPGRADE ?= --upgrade
PIP_COMPILE := env PIP_FIND_LINKS= PIP_CONSTRAINT= build/pip-tools/bin/pip-compile --index-url https://pypi.org/simple
lock:
	test -x build/pip-tools/bin/pip-compile || { $(PY) -m venv build/pip-tools && \
	  build/pip-tools/bin/pip install -q pip-tools==$(PIP_TOOLS_VERSION); }
	$(PIP_COMPILE) $(PIP_COMPILE_FLAGS) $(LOCK_UPGRADE) --extra dev -o $(DEV_LOCK) pyproject.toml
	$(PIP_COMPILE) $(PIP_COMPILE_FLAGS) -c $(DEV_LOCK) -o $(LOCK) pyproject.toml
	$(MAKE) gen

# Benchmarks, not part of `make test` (about 5-6 minutes on 2 cores): writes docs/performance.md and .json.
# e.g. make bench BENCH_ARGS="--scenario convergence --sites 1000"
bench: deps install
	$(VPY) -m tests.bench $(BENCH_ARGS)

OPENSTACK_DIR ?= .openstack

# A two-region OpenStack (Debian's packages) on loopback ports, left running; its clouds.yaml is
# $(OPENSTACK_DIR)/clouds.yaml. `make openstack-down` stops it and removes the folder.
openstack-up: deps install
	$(VPY) -m tests.openstack_cloud up --dir $(OPENSTACK_DIR)

openstack-down:
	$(VPY) -m tests.openstack_cloud down --dir $(OPENSTACK_DIR)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
