# vxbridge: `make run` starts the plugin, `make test` runs every test tier.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
SOCKET    ?= /run/docker/plugins/vxbridge.sock
STATE_DIR ?= /var/lib/vxbridge
LOG_LEVEL ?= info
# `make plugin` creates the managed plugin vxbridge:$(TAG) on the docker DOCKER_HOST names.
TAG       ?= latest
PLUGIN_DIR := build/plugin
# Fuzz targets run briefly in `make test`, longer in `make fuzz`. Budgets are
# counts of executions, not durations: with a duration, Go 1.26's fuzz
# coordinator can fail a clean run with "context deadline exceeded" as the
# time runs out (golang/go#75804, fixed in Go 1.27).
FUZZ_TIME ?= 40000x
FUZZ_TARGETS := ./driver:FuzzParseNetwork ./driver:FuzzNewEndpoint ./driver/ports:FuzzParseBindings ./driver:FuzzParseVNI \
	./plugin:FuzzHandler ./ipam:FuzzParsePool ./ipam:FuzzParsePoolID ./cluster:FuzzDecodeNetRecord ./cluster:FuzzVerifyRecord ./peers:FuzzForgedRecords ./names:FuzzDecide ./status:FuzzDecode \
	./doctor:FuzzParseForward ./firewall:FuzzPlanOnListing ./firewall:FuzzParseDNAT ./firewall:FuzzNFTRender ./portproxy:FuzzParseRange \
	./bridge:FuzzValidateName ./bridge:FuzzNewBridge .:FuzzParseServeFlags ./ownership/mark:FuzzParseAlias

.PHONY: all build run test test-unit test-fuzz lint fuzz deps clean plugin plugin-dir faults bench

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/vxbridge .

# The managed plugin's directory (config.json + rootfs/ with the static
# binary and both iptables backends), built without docker build.
plugin-dir: build
	@$(MAKE) --no-print-directory deps DEPS_FOR=run
	./hack/build-plugin.sh bin/vxbridge config.json $(PLUGIN_DIR)

# Creates (not enables) the managed plugin from it, with no registry.
plugin: plugin-dir
	docker plugin create vxbridge:$(TAG) $(PLUGIN_DIR)

deps:
	@./hack/install-deps.sh $(DEPS_FOR)

# Starts the plugin in the foreground (root: it makes bridges and rules).
run: build
	@$(MAKE) --no-print-directory deps DEPS_FOR=run
	./bin/vxbridge serve --socket $(SOCKET) --state-dir $(STATE_DIR) --log-level $(LOG_LEVEL)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd bench && $(GO) vet ./...

# The end-to-end tests run on two Docker daemons (README, "Docker versions"):
# all of them on the current one (built by hack/build-docker.sh, which `make
# deps DEPS_FOR=test` runs), and these groups again on Debian's docker.io
# 20.10, the oldest supported.
E2E_ON_DEBIAN := ^(TestSingleHost|TestPorts|TestMultiHost|TestManagedPlugin|TestNamesAcrossHosts)$$

# Every tier: pure and driver tests, kernel tests (root, one namespace each),
# end-to-end against real dockerds (root), then short fuzz runs.
test: build lint
	@$(MAKE) --no-print-directory deps DEPS_FOR=test
	VXBRIDGE_TEST_DOCKER=current CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 75m ./...
	VXBRIDGE_TEST_DOCKER=debian CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 45m -run '$(E2E_ON_DEBIAN)' ./e2e/
	@$(MAKE) --no-print-directory test-fuzz

test-unit: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -short ./...

test-fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn, $(FUZZ_TIME) executions"; \
		$(GO) test $$pkg -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZ_TIME) -fuzzminimizetime=100x; \
	done

fuzz:
	@$(MAKE) --no-print-directory test-fuzz FUZZ_TIME=1000000x

# The fault scenarios of RELIABILITY.md alone (root; ~2.5 min). `make test`
# runs them too, with the rest of e2e/.
faults: build
	@$(MAKE) --no-print-directory deps DEPS_FOR=test
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 45m -v -run '^TestFault' ./e2e/
	CGO_ENABLED=1 $(GO) test -race -count=1 -run '^TestHostile' ./plugin/

# Benchmarks (root; see BENCHMARKS.md): the harness in bench/ (a module of its
# own, so the plugin's go.mod lists only what the binary uses) measures the
# plugin in throwaway namespaces and writes bench/results/results.json, then
# bench/plot writes the PNG plots and BENCHMARKS.md. BENCH_FIGURES=2,3 picks;
# figures not run keep their earlier results in results.json.
BENCH_FIGURES ?= 2,3,1,4,5
bench: build
	@$(MAKE) --no-print-directory deps DEPS_FOR=test
	cd bench && VXBRIDGE_BENCH_OUT=$(CURDIR)/bench/results/results.json VXBRIDGE_BENCH_FIGURES=$(BENCH_FIGURES) \
		VXBRIDGE_BENCH_BIN=$(CURDIR)/bin/vxbridge $(GO) test -run '^TestBench$$' -count=1 -v -timeout 60m .
	cd bench && $(GO) build -o $(CURDIR)/bin/plot ./plot
	./bin/plot -in bench/results/results.json -plots bench/results -md BENCHMARKS.md

clean:
	rm -rf bin build
