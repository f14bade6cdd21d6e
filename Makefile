# isthmus: `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.isthmus-installed

.PHONY: all demo test lint typecheck gen check-gen install deps clean bench openstack-up openstack-down

all: test

# Debian packages the project runs against (etcd for the coordinator, the rest for tests).
APT_PACKAGES := etcd-server etcd-client gobgpd iproute2 iputils-ping systemd neutron-server \
	mariadb-server keystone glance-api nova-api openssh-client

deps:
	@missing=""; \
	command -v etcd >/dev/null || missing="$$missing etcd-server etcd-client"; \
	command -v gobgpd >/dev/null || missing="$$missing gobgpd"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v ping >/dev/null || missing="$$missing iputils-ping"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v neutron-server >/dev/null || missing="$$missing neutron-server"; \
	[ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	command -v keystone-manage >/dev/null || missing="$$missing keystone"; \
	command -v glance-api >/dev/null || missing="$$missing glance-api"; \
	command -v nova-api >/dev/null || missing="$$missing nova-api"; \
	command -v ssh-keygen >/dev/null || missing="$$missing openssh-client"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: deps install
	$(VPY) -m isthmus.coordinator.demo

test: deps install
	$(VPY) -m pytest -q tests

# mypy sees the package as installed (isthmus.agent = agent/, ...) through a tree of symlinks.
lint: install
	$(VENV)/bin/ruff check proto/isthmus agent coordinator drivers tests
	rm -rf build/mypy && mkdir -p build/mypy/isthmus
	for f in proto/isthmus/*; do ln -s ../../../$$f build/mypy/isthmus/; done
	for d in agent coordinator drivers; do ln -s ../../../$$d build/mypy/isthmus/$$d; done
	cd build/mypy && $(abspath $(VENV))/bin/mypy --config-file ../../pyproject.toml -p isthmus

# Regenerate the committed stubs after editing proto/isthmus/v1/*.proto
# (tests/test_proto_stubs.py fails while they drift).
gen: install
	$(VPY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
	  --grpc_python_out=proto proto/isthmus/v1/*.proto

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
