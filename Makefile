# vxbridge: `make run` starts the plugin, `make test` runs every test tier.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
SOCKET    ?= /run/docker/plugins/vxbridge.sock
STATE_DIR ?= /var/lib/vxbridge
LOG_LEVEL ?= info
# Fuzz targets run briefly in `make test`, longer in `make fuzz`.
FUZZ_TIME ?= 10s
FUZZ_TARGETS := ./driver:FuzzParseNetwork ./driver:FuzzNewEndpoint ./plugin:FuzzHandler ./ipam:FuzzParsePool

.PHONY: all build run test test-unit test-fuzz lint fuzz deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/vxbridge .

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

# Every tier: pure and driver tests, kernel tests (root, one namespace each),
# end-to-end against a real dockerd (root), then short fuzz runs.
test: build lint
	@$(MAKE) --no-print-directory deps DEPS_FOR=test
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 40m ./...
	@$(MAKE) --no-print-directory test-fuzz

test-unit: lint
	CGO_ENABLED=1 $(GO) test -race -count=1 -short ./...

test-fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZ_TIME)"; \
		$(GO) test $$pkg -run='^$$' -fuzz="^$$fn$$" -fuzztime=$(FUZZ_TIME); \
	done

fuzz:
	@$(MAKE) --no-print-directory test-fuzz FUZZ_TIME=5m

clean:
	rm -rf bin
