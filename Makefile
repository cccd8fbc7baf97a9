# ftpalg: `make demo` shows it working, `make test` proves it.
SHELL   := /bin/bash
export PATH := /usr/local/go/bin:$(HOME)/go/bin:$(PATH):/usr/sbin:/sbin
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
# The side-by-side bench is its own Go module (it alone needs cilium/ebpf).
BENCH   := tests/bench
# So is the Helm chart's test (it alone needs Helm's packages).
HELMTEST := deploy/helmtest
# Debian packages the tests and the demo drive for real.
DEB_PKGS := nftables vsftpd lftp curl iptables ipset conntrack iproute2 procps ca-certificates python3 openssl
# command -> package, to install only what is missing
DEB_CMDS := nft:nftables vsftpd:vsftpd lftp:lftp curl:curl iptables:iptables ipset:ipset conntrack:conntrack ip:iproute2 ss:iproute2 sysctl:procps python3:python3 openssl:openssl

.PHONY: all build test unit e2e demo bench deps vet fuzz mutants clean manifests

all: build

build: bin/ftpalg

# The GODEBUG default keeps the runtime's monitor thread (sysmon) out of its
# deep sleep: ftpalg idles between control lines, and each line's first
# system call would wake sysmon into a burst of 20 µs sleeps. Re-measured
# 2026-11-30 with the server 0, 1 and 10 ms away: it saves 25-40% of the
# daemon's CPU per small file, and costs no measurable idle CPU
# (docs/limits-and-defaults.md). (It replaces the linker's GODEBUG default,
# empty for this module; ftpalg -h explains the side effect.)
GO_LDFLAGS := -s -w -X main.version=$(VERSION) -X runtime.godebugDefault=schedtrace=2147483647

bin/ftpalg: $(shell find . -name '*.go' -not -path './.git/*') go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(GO_LDFLAGS)" -o $@ ./cmd/ftpalg

# Install the distribution packages the tests need, only when missing.
deps:
	@missing=""; for pair in $(DEB_CMDS); do cmd=$${pair%%:*}; pkg=$${pair##*:}; \
	  command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing packages:$$missing (run as root to install)"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@command -v $(GO) >/dev/null || { echo "Go toolchain not found (expected /usr/local/go/bin/go)"; exit 1; }
	@$(GO) mod download
	@cd $(BENCH) && $(GO) mod download
	@cd $(HELMTEST) && $(GO) mod download

vet:
	$(GO) vet ./...
	cd $(BENCH) && $(GO) vet ./...
	cd $(HELMTEST) && $(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

# Unit tests (alg, config, proxy; natrules' root tests run when root), then
# the Helm chart: helm lint and helm template with Helm's own packages, and
# the manifests' drift checks on each rendering.
unit:
	$(GO) test -count=1 ./alg/... ./cmd/... ./proxy/... ./natrules/... ./deploy/...
	cd $(HELMTEST) && $(GO) test -count=1 ./...

# Re-render deploy/kubernetes/ftp-sidecar.yaml from the chart.
manifests:
	cd $(HELMTEST) && UPDATE_MANIFESTS=1 $(GO) test -count=1 -run TestPlainManifestInStep ./...

# End-to-end tests in network namespaces (root), then the bench module's
# own test (the kernel relay floor).
e2e: build
	$(GO) test -count=1 -p 1 -timeout 20m -v ./tests/...
	cd $(BENCH) && $(GO) test -count=1 -timeout 5m -v ./...

test: deps build vet unit e2e

demo: deps build
	$(GO) run ./tests/demo

# Micro-benchmarks, then plain routing vs the kernel FTP helper vs ftpalg on
# the namespace bed (root; ~3 min; results also in /tmp/bench-results.md).
# BENCH_ARGS=-quick for a fast check; -only=bulk,files,sessions,idle; -modes=plain,kernel,ftpalg.
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem ./alg/...
	$(GO) test -run '^$$' -bench . -benchtime 300x ./natrules/...
	cd $(BENCH) && $(GO) run . $(BENCH_ARGS)

# Mutation check (root; not part of `make test`): breaks each guarded
# security property in a copy of the tree and fails unless its tests fail.
# MUTANTS_ARGS=-only=one-shot runs one; -keep keeps the copies and logs.
mutants: build
	$(GO) run ./tests/mutants $(MUTANTS_ARGS)

fuzz:
	for f in $$($(GO) test -list 'Fuzz.*' ./alg/... | grep ^Fuzz); do $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 30s ./alg/...; done

clean:
	rm -rf bin
