# The two commands of README.md:
#   make run    set everything up and run the local demo on loopback (ARGS="--port-base 18000" moves its ports)
#   make test   set everything up (Python and Debian packages) and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_PACKAGES := wrk nginx etcd-server nghttp2-client dnsperf knot
DEBIAN_PACKAGES := slapd ldap-utils bind9-dnsutils curl openssl pebble chromium chromium-driver nghttp2-client serf docker.io busybox-static nginx bind9 caddy docker-compose prometheus
TEST_WORKERS ?= 2

.PHONY: run test setup system-deps bench-deps diagrams lint typecheck unit clean spec-sync-write dev-validate install uninstall \
	base-image images

# Production install (docs/install.md): venv in $(PREFIX)/venv, users, directories, units.
# Run again to upgrade. DESTDIR stages everything under another root.
PREFIX ?= /opt/suite
DESTDIR ?=

run: setup
	$(PY) -m suite.demo $(ARGS)

test: system-deps setup lint typecheck unit

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# State-machine diagrams (automat-visualize) into docs/diagrams/, one SVG per
# machine; needs graphviz's dot (installed here if missing) and the graphviz
# Python package (installed into the venv).  Not part of CI.
MACHINE_MODULES := suite.gossip.member suite.gossip.prober suite.gossip.lifecycle suite.specter.chord.machine suite.specter.chord.rounds suite.specter.chord.heal \
	suite.raft.roles suite.raft.progress suite.raft.multi suite.spacecomms.session suite.spacecomms.resync suite.clustor.freshness \
	suite.acme.renewal suite.ceptra.partitions.lifecycle suite.goop.groups.hostlink suite.goop.groups.member suite.goop.lua.pool suite.goop.p2p.hubfollow \
	suite.specter.tunnel.machine suite.specter.tunnel.stream suite.specter.gateway.lifecycle suite.specter.gateway.visitormachine suite.specter.gateway.h2stream suite.specter.gateway.h2conn suite.specter.gateway.h3conn \
	suite.constellation.leases.hold suite.constellation.leases.keeper suite.raft.memberchange suite.raft.walbatch suite.ceptra.combine suite.serial \
	suite.raft.snapshotter suite.specter.rpcauth suite.specter.chord.pacing
diagrams: setup
	@command -v dot >/dev/null || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }
	$(PY) -c "import graphviz" 2>/dev/null || $(PY) -m pip install -q graphviz
	@tmp=$$(mktemp -d); mkdir -p docs/diagrams; \
	for m in $(MACHINE_MODULES); do $(VENV)/bin/automat-visualize -q -d $$tmp -i $$tmp -t svg $$m || exit 1; done; \
	for f in $$tmp/*.dot.svg; do b=$$(basename $$f .dot.svg); cp $$f docs/diagrams/$$b.svg; echo docs/diagrams/$$b.svg; done; \
	rm -rf $$tmp

# Benchmarks are run by hand (see docs/performance.md); this installs their load generators.
bench-deps: setup
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: setup typecheck
	$(VENV)/bin/ruff check suite tests bench twisted containers stubs
	$(VENV)/bin/ruff format --check suite tests bench twisted containers stubs

# mypy over suite/ (strict) and tests/ (setup.cfg [mypy]: packages, flags).
typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -n $(TEST_WORKERS) -q tests

# Container images (docs/containers.md), built offline for the engine `docker` reaches
# (DOCKER_HOST): base-image = Debian's python3 from the host's apt sources, imported as
# suite-base:local (cached in var/containers by content hash); images = the base, a wheelhouse
# built here, and every family's Dockerfile target (FAMILIES="goop specter" for some).
FAMILIES ?=
base-image:
	$(PYTHON) containers/build.py --base-only

images: setup
	$(PY) containers/build.py $(FAMILIES)

install:
	sh scripts/install.sh PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

uninstall:
	sh scripts/install.sh --uninstall PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

# After changing docs/clustor-spec.md: record its hash in manifests/ceptra_manifest.json.
spec-sync-write: setup
	$(PY) -m suite.ceptra.spec --write

# A local Specter ring (3 nodes, gateway) and a tunnel, checked end to end; exit 1 on any failure.
dev-validate: setup
	$(PY) -m suite.specter.devvalidate

clean:
	rm -rf $(VENV) var _trial_temp* build *.egg-info
