# quilt-runtime networking. `make run` to try it, `make test` to check it;
# on a fresh Debian machine with Go, as root, each installs what it lacks.
SHELL := /bin/bash
GO ?= go
# Pure Go everywhere: static binaries install anywhere, and the helper
# links no C.
export CGO_ENABLED := 0
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 1m

.PHONY: all build deps run test vet fmt-check proto fuzz package clean bench cni-tools grpc-tools man

all: build

# What run and test need beyond Go (packaging/dev/deps.txt): as root, the
# missing Debian packages are installed, and named; with everything there,
# nothing happens. Without root it names what to install and fails.
deps:
	@bash packaging/dev/deps.sh

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./helper/cmd/quilt-route-helper ./frontend/cmd/quilt-runtime ./frontend/cmd/quiltctl ./frontend/cmd/quilt-ipam

# Starts the helper (CAP_NET_ADMIN only) in a throwaway network namespace
# with vxlan100 and the frontend (unprivileged) on 127.0.0.1:50051.
# SANDBOX=0 runs the helper against the host's own routing table instead.
SANDBOX ?= 1
run: deps build
	SANDBOX=$(SANDBOX) bash packaging/dev/run.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# Unit, integration (real kernel, in throwaway namespaces) and end-to-end
# tests. Root is needed for the namespaces; without it those tests skip,
# and with CI=true they fail instead.
test: deps fmt-check vet
	$(GO) test -count=1 -timeout 15m ./...

# Regenerates proto/quiltpb with pinned generators (see proto/gen.sh).
proto:
	bash proto/gen.sh

# Runs each fuzz target for FUZZTIME (CI: a few seconds each). `make test`
# runs every seed corpus (testdata/fuzz) as ordinary tests.
FUZZ_TARGETS := ./shared/wire:FuzzDecode ./helper:FuzzRouteReplies \
	./frontend/api:FuzzParseDestination ./frontend/api:FuzzParseInterface \
	./frontend/ipam:FuzzCheckID ./frontend/internal/quote:FuzzValue \
	./frontend/state:FuzzLoad
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "fuzz $${t#*:} in $${t%%:*} for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

# The man pages, gzipped in $(BIN)/man, made from the programs' own flag
# definitions by internal/cmd/quilt-man (quilt-runtime(8), quiltctl(1),
# quilt-route-helper(8), quilt-ipam(8)).
man: build
	$(GO) run ./internal/cmd/quilt-man -bin $(BIN) -out $(BIN)/man

# The .deb (packaging/nfpm.yaml) in $(DIST), built by nfpm through the Go
# toolchain at a pinned version. PKG_VERSION is the Debian version: the
# latest tag vX.Y.Z as X.Y.Z, or before any tag 0.1.0~git<commit date>.<hash>,
# which sorts before the first release, 0.1.0 (packaging/deb/changelog.yml).
DIST ?= dist
NFPM ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG_VERSION ?= $(shell v=$$(git describe --tags --match "v[0-9]*" --abbrev=0 2>/dev/null) && echo "$${v#v}" || git log -1 --date=format:%Y%m%d --format=0.1.0~git%cd.%h 2>/dev/null || echo 0.1.0~dev)
package: build man
	mkdir -p $(DIST)
	rm -f $(DIST)/quilt-runtime_*.deb
	PKG_VERSION='$(PKG_VERSION)' $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DIST)/

clean:
	rm -rf $(BIN) $(DIST)

# The reference CNI code the overlay's CNI step runs (make demo and
# TestOverlayThreeNodes): the bridge plugin and cnitool, built by the Go
# toolchain at these pinned versions into $(BIN)/cni. Nobody here wrote them.
CNI_BRIDGE ?= github.com/containernetworking/plugins/plugins/main/bridge@v1.10.0
CNITOOL ?= github.com/containernetworking/cni/cnitool@v1.3.1
cni-tools:
	mkdir -p $(BIN)/cni
	GOBIN=$(abspath $(BIN)/cni) $(GO) install $(CNI_BRIDGE)
	GOBIN=$(abspath $(BIN)/cni) $(GO) install $(CNITOOL)

# grpcurl (channelz, reflection) and ghz (ad hoc load tests), the gRPC
# ecosystem's clients the README shows, at pinned versions into $(BIN)/tools;
# TestGRPCEcosystemClients runs them.
GRPCURL ?= github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
GHZ ?= github.com/bojand/ghz/cmd/ghz@v0.93.0
grpc-tools:
	mkdir -p $(BIN)/tools
	GOBIN=$(abspath $(BIN)/tools) $(GO) install $(GRPCURL)
	GOBIN=$(abspath $(BIN)/tools) $(GO) install $(GHZ)

# The three-node overlay scenario, narrated for a newcomer (needs root):
# nodes, the agent's calls, routing tables, the connectivity matrix,
# containers made by cnitool through bridge and quilt-ipam, a SIGKILL
# restart and a heal. DEMO_FLAGS='-o json' prints one JSON report.
.PHONY: demo
DEMO_FLAGS ?=
demo: deps build cni-tools
	$(GO) build -trimpath -o $(BIN)/ ./e2e/cmd/quilt-demo
	@[ "$$(id -u)" -eq 0 ] || { echo "make demo needs root: it creates network namespaces and starts processes under other uids (try: sudo make demo)" >&2; exit 1; }
	$(BIN)/quilt-demo -bin $(BIN) $(DEMO_FLAGS)

# The route-change benchmark (needs root): the kernel floor, the service
# in one root process, and the privilege-separated pair, each in throwaway
# network namespaces; one table per N (README: Performance). BENCH_N is the
# numbers of peer routes; BENCH_FLAGS='-o json' prints one JSON report
# (quilt-bench -h for the other flags).
BENCH_N ?= 255,65536
BENCH_FLAGS ?=
bench: build
	$(GO) build -trimpath -ldflags '-s -w' -o $(BIN)/ ./bench/cmd/quilt-bench ./bench/cmd/quilt-bench-single
	@[ "$$(id -u)" -eq 0 ] || { echo "make bench needs root: it creates network namespaces, starts processes under other uids and sends rtnetlink messages inside them (try: sudo make bench)" >&2; exit 1; }
	$(BIN)/quilt-bench -bin $(BIN) -n $(BENCH_N) $(BENCH_FLAGS)
