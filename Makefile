# quilt-runtime networking. `make run` to try it, `make test` to check it.
SHELL := /bin/bash
GO ?= go
# Pure Go everywhere: the helper changes capabilities on all threads
# (syscall.AllThreadsSyscall), which cgo forbids, and static binaries
# install anywhere.
export CGO_ENABLED := 0
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 1m

.PHONY: all build run test vet fmt-check proto fuzz clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./helper/cmd/quilt-route-helper ./frontend/cmd/quilt-runtime ./frontend/cmd/quiltctl

# Starts the helper (CAP_NET_ADMIN only) in a throwaway network namespace
# with vxlan100 and the frontend (unprivileged) on 127.0.0.1:50051.
# SANDBOX=0 runs the helper against the host's own routing table instead.
SANDBOX ?= 1
run: build
	SANDBOX=$(SANDBOX) bash packaging/dev/run.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Unit, integration (real kernel, in throwaway namespaces) and end-to-end
# tests. Root is needed for the namespaces; without it those tests skip,
# and with CI=true they fail instead.
test: fmt-check vet
	$(GO) test -count=1 -timeout 15m ./...

# Regenerates proto/quiltpb with pinned generators (see proto/gen.sh).
proto:
	bash proto/gen.sh

# Runs each fuzz target for FUZZTIME.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./shared/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseDestination$$' -fuzztime $(FUZZTIME) ./frontend
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./frontend/state

clean:
	rm -rf $(BIN)

# The three-node overlay scenario, narrated for a newcomer (needs root):
# nodes, the agent's calls, routing tables, the connectivity matrix, a
# SIGKILL restart and a heal. DEMO_FLAGS='-o json' prints one JSON report.
.PHONY: demo
DEMO_FLAGS ?=
demo: build
	$(GO) build -trimpath -o $(BIN)/ ./e2e/cmd/quilt-demo
	@[ "$$(id -u)" -eq 0 ] || { echo "make demo needs root: it creates network namespaces and starts processes under other uids (try: sudo make demo)" >&2; exit 1; }
	$(BIN)/quilt-demo -bin $(BIN) $(DEMO_FLAGS)
