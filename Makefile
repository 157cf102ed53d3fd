# meshcni: `make demo` runs the plugin on a throwaway node; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := hooks core testing extensions/redirect_tproxy extensions/kubevirt extensions/backend_iptc extensions/backend_nftables extensions/repair_delete extensions/platform_gke extensions/platform_openshift examples/meshcni-example-extension
PYPROJECTS := $(addsuffix /pyproject.toml,$(PACKAGES)) pyproject.toml
DEV_TOOLS := pytest hypothesis ruff mypy container-runtime-interface-api==2.0.1 kubernetes-validate cel-python

.PHONY: install system-deps e2e-tools plugin-bundle image control-plane kube-node istio-cni test lint typecheck demo demo-cluster bench clean

install: $(VENV)/.stamp-install

system-deps:
	@scripts/install-system-deps.sh

$(VENV)/.stamp-install: $(PYPROJECTS) Makefile
	@scripts/install-system-deps.sh
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(DEV_TOOLS) $(addprefix -e ./,$(PACKAGES))
	@touch $@

# Real CNI clients for the end-to-end tests (tests/e2e): containerd, runc and a static busybox
# (the pause image) from Debian, cnitool built offline from Debian's source package; the CRI
# client (container-runtime-interface-api) comes with DEV_TOOLS.
e2e-tools: install build/plugin-bundle/.stamp
	@scripts/install-e2e-tools.sh

# The self-contained istio-cni (a relocatable copy of the venv's CPython behind a C launcher) that
# install-cni copies to hosts.
PLUGIN_SOURCES := $(shell find hooks/src core/src core/bin extensions/*/src -type f -name '*.py' -o -name istio-cni)
build/plugin-bundle/.stamp: $(PLUGIN_SOURCES) scripts/build-plugin-bundle.sh scripts/plugin-launcher.c scripts/embedded-python.c scripts/launcher-agent.c scripts/launcher-json.c scripts/launcher.h $(VENV)/.stamp-install
	@scripts/build-plugin-bundle.sh
	@touch $@

plugin-bundle: build/plugin-bundle/.stamp

# The install-cni OCI image (scripts/build-image.py), reproducible and without a container engine:
# build/image/ holds the OCI layout, an archive of it, `digest` and `reference` (to pin the
# manifests: --set values.cni.image=$$(cat build/image/reference)). It is rebuilt only when the
# bundle, the script, the image-only extensions or the commit (its revision label) changed.
IMAGE_SOURCES := scripts/build-image.py scripts/image-entrypoint.c \
	$(shell find extensions/platform_gke extensions/platform_openshift extensions/repair_delete \
	  \( -name '*.py' -path '*/src/*' -o -name pyproject.toml \) -not -path '*/build/*')
image: build/image/digest

build/image/digest: build/plugin-bundle/.stamp $(IMAGE_SOURCES) build/.revision
	$(BIN)/python scripts/build-image.py

build/.revision: FORCE
	@mkdir -p build
	@revision="$$(git rev-parse HEAD)$$(git diff --quiet HEAD || echo -dirty)"; \
	  [ "$$(cat $@ 2>/dev/null)" = "$$revision" ] || echo "$$revision" > $@

FORCE:

# The real etcd and kube-apiserver the Kubernetes-facing tests run against, built from the Go module
# proxy at pinned versions once per machine (the script returns at once when they are there).
control-plane:
	@scripts/build-control-plane.sh

# kubelet, kube-controller-manager and kube-scheduler from the control plane's pinned k8s.io/kubernetes,
# for the whole-node test under a real kubelet (tests/e2e/test_kube_node.py); cached the same way.
kube-node:
	@scripts/build-kube-node.sh

# Today's Istio CNI plugin (istio.io/istio's istio-cni, release-1.30) for the live comparison
# (tests/test_istio_live.py) and `make bench`; built once per machine like the control plane.
istio-cni:
	@scripts/build-istio-cni.sh

# The agent suites run twice: with the venv's istio-cni, and with the self-contained one hosts get
# (its C launcher talks to the agent itself).
test: install e2e-tools control-plane kube-node istio-cni image
	$(BIN)/ruff check .
	$(BIN)/mypy hooks/src core/src testing/src extensions/*/src examples/*/src
	$(BIN)/pytest
	MESHCNI_TEST_PLUGIN=$(CURDIR)/build/plugin-bundle/istio-cni $(BIN)/pytest -q tests/test_agent.py \
	  tests/test_agent_hostile.py tests/test_agent_peer.py tests/test_agent_deadline.py

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy hooks/src core/src testing/src extensions/*/src examples/*/src

demo: install
	$(BIN)/python -m meshcni_testing.demo

# The whole node: make image's image in a throwaway node's containerd, the rendered DaemonSet's pod
# started from its template as kubelet would, mesh pods redirected, a rollout (the end-to-end test,
# narrated; tests/e2e/test_install_cni_daemonset.py); then the same under a real kubelet, scheduler
# and DaemonSet controller, with `meshcni manifest apply` and a pod repaired (tests/e2e/test_kube_node.py).
demo-cluster: install e2e-tools control-plane kube-node image
	$(BIN)/pytest -s -q -p no:cacheprovider "tests/e2e/test_install_cni_daemonset.py::test_the_rendered_daemon_set_runs_the_node[defaults]" \
	  tests/e2e/test_kube_node.py

bench: install plugin-bundle control-plane istio-cni
	$(BIN)/python bench/add_latency.py
	$(BIN)/python bench/burst_api.py
	$(BIN)/python bench/heal_latency.py
	$(BIN)/python bench/agent_memory.py
	$(BIN)/python bench/repair_scale.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
