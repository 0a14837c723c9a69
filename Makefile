# Tether: build, test and demo. `make help` lists the targets.

GO ?= go

# Every command of the module: ./<dir>/cmd/... for each top-level dir that
# has a cmd/ (cloudcore, edgecore, controlplane, ...). Listed by wildcard so
# that a missing dir is skipped instead of failing the build.
CMD_DIRS := $(wildcard */cmd)
CMD_PKGS := $(patsubst %,./%/...,$(CMD_DIRS))
CMD_BINS := $(addprefix bin/,$(notdir $(wildcard $(addsuffix /*,$(CMD_DIRS)))))

.DEFAULT_GOAL := help

.PHONY: help deps build release image kube-binaries conformance-binaries conformance test test-unit test-integration crash fuzz bench demo demo-test clean distclean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-18s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

build: ## Build the Tether commands (*/cmd/...) into bin/
	$(GO) build -o bin/ $(CMD_PKGS)

# make release: static (CGO_ENABLED=0), -trimpath, stripped binaries for the
# boards and the cloud, each stamped with VERSION (`edgecore --version`),
# and dist/SHA256SUMS. hack/release.sh lists the targets.
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

release: ## Build dist/: edgecore and modbus-mapper for linux amd64/arm64/armv7, cloudcore for amd64/arm64, SHA256SUMS
	rm -rf dist
	VERSION=$(VERSION) GO=$(GO) hack/release.sh

# deps: the missing Debian packages only (nothing to do takes a fraction of
# a second), so that demo and test need nothing else on a fresh machine; not
# root, it stops with the apt-get command to run.
deps: ## Install the missing Debian packages the demo and the tests need (as root; else prints the command)
	hack/install-deps.sh

kube-binaries: ## Build kube-apiserver, kube-controller-manager, kube-scheduler and metrics-server into bin/ (once per pinned version)
	hack/kube-binaries.sh

conformance-binaries: ## Build e2e.test, ginkgo and the agnhost and nnp test programs into bin/ (once per pinned version)
	hack/conformance-binaries.sh

# make conformance: Kubernetes' [NodeConformance] specs (e2e.test at the
# pinned version) against one edge node in the private containerd, the
# only node of the cluster (e2e/conformance_test.go). It writes
# conformance/out/junit.xml, e2e.log and summary.txt, and prints
# `N passed, M failed, K skipped` with the failures. As root. The CI subset
# (ciConformanceFocus) runs in make test-integration.
CONFORMANCE_FOCUS ?= \[NodeConformance\]
CONFORMANCE_NODES ?= 4

# The skip list: one `CONFORMANCE_SKIP += <regexp> # <reason>` line per
# entry, its spaces written as dots (e2e/conformance_test.go reads these
# lines; ginkgo skips a spec whose full name matches one).
CONFORMANCE_SKIP += should.be.consumable.via.the.environment  # envFrom names like data-1 with `sh -c env`: Debian's busybox-static 1.35 sh leaves names that are not shell names out of env's environment (busybox 1.36's sh keeps them; bookworm has no busybox >= 1.36, and bash, which keeps them too, fails the read-only spec that expects busybox sh's "can't create" message); edgecore passes them (cri TestContainerEnv)
CONFORMANCE_SKIP += PrivilegedPod.*should.enable.privileged.commands  # runs `ip link add dummy1 type dummy`: this machine's kernel has no dummy links (Unknown device type), privileged or not

conformance: deps build kube-binaries conformance-binaries ## Kubernetes [NodeConformance] on an edge node (as root): conformance/out/junit.xml and the counts
	TETHER_CONFORMANCE_FOCUS='$(CONFORMANCE_FOCUS)' TETHER_CONFORMANCE_NODES=$(CONFORMANCE_NODES) \
	  $(GO) test -tags integration -count=1 -timeout 3h -run '^TestNodeConformance$$' ./e2e; \
	  rc=$$?; cat conformance/out/summary.txt 2>/dev/null; exit $$rc

test: deps ## Run every test: test-unit, then test-integration
	$(MAKE) test-unit
	$(MAKE) test-integration

test-unit: ## go vet and the unit tests, with the race detector
	$(GO) vet ./...
	$(GO) test -race ./...

# The integration tier runs only the tests of the files built with
# `-tags integration` (hack/integration-tests.sh): the unit tests ran in
# test-unit already.
test-integration: deps build kube-binaries conformance-binaries ## Integration tests against real etcd, Kubernetes and containerd, then the demo's offline walk-through (run as root)
	$(GO) vet -tags integration ./...
	$(GO) test -tags integration -race -count=1 -timeout 40m -run "$$(hack/integration-tests.sh run)" $$(hack/integration-tests.sh pkgs)
	hack/demo-offline-test.sh

# make crash: the crash tier (e2e/crash_test.go) with CRASH_ROUNDS rounds of
# SIGKILL for edgecore and for cloudcore each; make test runs it with 10.
CRASH_ROUNDS ?= 60

crash: kube-binaries ## The crash tier: edgecore and cloudcore binaries killed with SIGKILL for CRASH_ROUNDS rounds each (default 60; as root)
	TETHER_CRASH_ROUNDS=$(CRASH_ROUNDS) $(GO) test -tags integration -race -count=1 -timeout 60m -run '^TestCrash' -v ./e2e

# make fuzz: every Fuzz* target of the module (go test -list, in the packages
# whose tests have one), one after the other, each for FUZZTIME (FUZZTIME=5m
# for longer; a count such as 10000x also works).
# FUZZPARALLEL is go test's -parallel: the fuzzing workers of one target.
# New crashers are written to the package's testdata/fuzz/<FuzzName>/, where
# `go test` (make test-unit) runs them from then on with the seed corpus.
FUZZTIME ?= 30s
FUZZPARALLEL ?= 1

fuzz: ## Run each Go fuzz target for FUZZTIME (default 30s); crashers land in testdata/fuzz
	@set -e; for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for name in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$name"; \
	    $(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -parallel $(FUZZPARALLEL) $$pkg; \
	  done; \
	done

# make bench: node counts of the suite (BENCH_NODES=100,1000 for a short
# run) and any other tether-bench flags (BENCH_FLAGS="--idle 30s"). As
# root, the edgecore binary's idle traffic is also counted at the IP layer
# behind an emulated link with 25 ms each way (--netns).
BENCH_NODES ?= 100,1000,5000,10000
ifeq ($(shell id -u),0)
BENCH_FLAGS ?= --profile-nodes 1000 --netns --netns-delay 25ms
else
BENCH_FLAGS ?= --profile-nodes 1000
endif
BENCH_OUT ?= bench/out

bench: build kube-binaries ## Go micro-benchmarks, then the suite (bench/out: report.json, report.txt, latency.png); BENCH_NODES=100,1000 for less
	mkdir -p $(BENCH_OUT)
	$(GO) test -run '^$$' -bench . -timeout 5m ./... > $(BENCH_OUT)/gobench.txt 2>&1 || echo "make bench: some Go benchmarks failed; tether-bench reports which"
	grep -E '^(Benchmark|ok|FAIL|---)' $(BENCH_OUT)/gobench.txt || true
	@# kubectl logs (time to first byte) and exec (round trip) through the API server, the kubelet proxy and the tunnel: p50/p99 of 100 runs (root: containerd)
	if [ "$$(id -u)" = 0 ]; then TETHER_BENCH_STREAMS=100 TETHER_BENCH_STREAMS_OUT=$(abspath $(BENCH_OUT))/streams.txt \
	  $(GO) test -tags integration -count=1 -run '^TestStreamLatency$$' -timeout 10m ./e2e > $(BENCH_OUT)/streams.log 2>&1 \
	  && cat $(BENCH_OUT)/streams.txt || echo "make bench: the stream latency run failed: $(BENCH_OUT)/streams.log"; fi
	bin/tether-bench --nodes $(BENCH_NODES) --out $(BENCH_OUT) --bin bin --gobench $(BENCH_OUT)/gobench.txt $(BENCH_FLAGS)
	@# 3 cloudcore replicas holding 1,000 hollow nodes together; one stopped with SIGTERM, another with SIGKILL: their nodes' reconnect p50/p99
	bin/tether-sim --replicas 3 --cloudcore bin/cloudcore simulator/testdata/bench/replicas-1000.txt > $(BENCH_OUT)/replicas.txt 2>&1 \
	  || echo "make bench: the replicas run failed: $(BENCH_OUT)/replicas.txt"
	@grep -E '^  (replicas|failover|rebalance):' $(BENCH_OUT)/replicas.txt | sed 's/^  /3 replicas, 1000 nodes: /' || true
	@# the 10,000-node reconnect storm over two tether-sim processes (one process holds at most 9,900 nodes)
	hack/storm-split.sh || echo "make bench: the split storm run failed: bench/out/storm-split"
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "== e2e figures (pod start on containerd, edgecore binary RSS with 20 pods, device lag, one node back after a 60s outage): $(BENCH_OUT)/e2e-figures.txt"; \
	  $(GO) test -tags 'integration bench' -count=1 -timeout 20m -v -run '^(TestCRIPodStartTimes|TestCRIEdgecoreBinaryRSS|TestDevicesLag|TestReconnectAfterOutage)$$' ./e2e/ > $(BENCH_OUT)/e2e-figures.txt 2>&1 || echo "make bench: an e2e figure test failed, see $(BENCH_OUT)/e2e-figures.txt"; \
	  grep -E 'pod start|edgecore binary RSS|devices|reconnect after|^(---|ok|FAIL)' $(BENCH_OUT)/e2e-figures.txt || true; \
	else echo "make bench: the e2e figures need root (containerd): skipped"; fi

# make image: cloudcore's container image for linux/amd64 and linux/arm64,
# written by tether-image (package ociimage) with no registry or daemon.
IMAGE ?= tether.local/cloudcore:latest
image: ## cloudcore's image for linux/amd64 and linux/arm64: dist/cloudcore-image.tar (ctr -n k8s.io images import)
	mkdir -p dist
	for arch in amd64 arm64; do \
	  CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -ldflags '-s -w' -o dist/image/cloudcore-linux-$$arch ./cloudcore/cmd/cloudcore || exit 1; \
	done
	$(GO) run ./ociimage/cmd/tether-image --name $(IMAGE) --out dist/cloudcore-image.tar --path /cloudcore \
	  linux/amd64=dist/image/cloudcore-linux-amd64 linux/arm64=dist/image/cloudcore-linux-arm64

demo: deps build kube-binaries ## Run the demo until Ctrl-C (hack/demo.sh; hack/demo.sh status|cloud-down|cloud-up|edge-reboot|edge-restart from another terminal)
	hack/demo.sh

# demo-test: the demo's offline walk-through without a person, alone (70 s
# to 2 min here; make test-integration ends with it).
demo-test: deps build kube-binaries ## Run the demo's offline walk-through as a test (hack/demo-offline-test.sh, as root)
	hack/demo-offline-test.sh

clean: ## Remove .run/, dist/ and the Tether commands in bin/ (keeps the Kubernetes binaries)
	rm -rf .run dist
	rm -f $(CMD_BINS)

distclean: clean ## Also remove bin/, including the Kubernetes binaries
	rm -rf bin
