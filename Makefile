# PopBox — make targets. `make` alone lists them (help is the default goal).
# A target shows up in `make help` when its rule line ends with "## text".

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
# Version stamped into the binary: the git description, or "dev" outside a
# repository / before the first commit.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
VERSION_PKG := github.com/popbox/popbox/internal/version
BIN_DIR ?= bin
CERT_DIR ?= certs
# Extra arguments: `make run ARGS="--log-level debug"`.
ARGS ?=
# go test settings.
PKGS ?= ./...
# With PKGS=./..., these packages are named first so that go test starts
# them first: they are the longest (Cluster/Sentinel failovers, the
# gateway's suite, the black-box suites) and, started last, one of them
# ran alone on one core at the end (at go test -p 2 on this 2-core box).
SLOW_PKGS ?= ./tests/scaletest ./gateway ./tests/e2e ./redisq ./tests/historytest ./tests/uitest
# How many test binaries go test runs at once (its -p; the default is the
# number of cores). The suites spend much of their time waiting (failovers,
# ack deadlines, browsers, long polls): at -p 2 `make test` used 1.15 of the
# 2 cores on average, so it runs more of them side by side.
TEST_P ?= 4
# Test binaries are linked without DWARF (-w): go test links ~37 race
# binaries, and DWARF was a quarter of a link's CPU here (tests/e2e: 2.4 to
# 1.8 user-seconds); race reports and panics name file:line from the Go
# symbol table, which stays.
TEST_LDFLAGS ?= -w
TEST_TIMEOUT ?= 20m
TEST_FLAGS ?=
# Fuzz targets run briefly by `make test` / `make fuzz`, as package:FuzzName.
# (Plain `go test` already runs the seed corpus of every fuzz target.)
FUZZ_TARGETS ?= ./request:FuzzParseProvision ./request:FuzzValidQueueID ./auth:FuzzParseClaims
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" when a worker is busy at
# the deadline on a loaded machine (go.dev/issue/75804, fixed in Go 1.27);
# it failed CI that way. 200,000 inputs take 5-10 s per target here.
FUZZTIME ?= 200000x
# `make test` fuzzes each target for fewer inputs (a smoke run: about 2 s
# a target; the fuzz runs were 20 of the 33 s its fuzz step took); `make fuzz`
# alone runs FUZZTIME.
TEST_FUZZTIME ?= 50000x
# The go test command of `make test` (printed, then run).
GO_TEST = $(GO) test -race -count=1 -p $(TEST_P) -ldflags='$(TEST_LDFLAGS)' -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) $(if $(filter ./...,$(PKGS)),$(SLOW_PKGS)) $(PKGS)
# Arguments of the load tool for `make bench` and `make bench-full`.
BENCH_ARGS ?= --write-doc docs/BENCHMARKS.md
BENCH_FULL_ARGS ?= --full
# The suite's comparison peer (issue 14): Centrifugo, built once from the Go
# module proxy by `make centrifugo` (bench builds it when missing; a failed
# build only makes the comparison say "peer not run"). CENTRIFUGO_BIN= (empty)
# runs the suite without the peer.
CENTRIFUGO_VERSION ?= v6.9.1
CENTRIFUGO_BIN ?= $(BIN_DIR)/centrifugo
# Stamped as its releases are, so that `centrifugo version` names the version.
CENTRIFUGO_LDFLAGS = -s -w -X github.com/centrifugal/centrifugo/v6/internal/build.Version=$(patsubst v%,%,$(CENTRIFUGO_VERSION))

# Go files to check with gofmt (every module in the tree, not testdata).
GOFILES = $(shell find . -type f -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' \
	-not -path '*/node_modules/*' -not -path './vendor/*')

.PHONY: help run build test test-js fuzz lint fmt certs bench bench-full bench-go centrifugo clean \
	bench-peer check-redis check-node check-fmt

help: ## list the targets (default)
	@echo "PopBox — usage: make <target> [VAR=value ...]"
	@echo
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: ARGS (run), VERSION (build), PKGS TEST_FLAGS TEST_TIMEOUT TEST_P TEST_LDFLAGS TEST_FUZZTIME (test),"
	@echo "  FUZZ_TARGETS FUZZTIME (fuzz), BENCH_ARGS BENCH_FULL_ARGS CENTRIFUGO_BIN CENTRIFUGO_VERSION (bench),"
	@echo "  CERT_DIR (certs)"

run: ## start the gateway (go run ./cmd/popbox serve ARGS); embedded in-memory store unless POPBOX_REDIS_URL is set
	$(GO) run ./cmd/popbox serve $(ARGS)

build: ## static binary bin/popbox, stamped with VERSION
	CGO_ENABLED=0 $(GO) build -trimpath \
		-ldflags "-s -w -X $(VERSION_PKG).Version=$(VERSION)" \
		-o $(BIN_DIR)/popbox ./cmd/popbox
	@echo "built $(BIN_DIR)/popbox ($(VERSION))"

test: ## gofmt check, go vet, go test -race (incl. fuzz seed corpora and the JS client's node --test suite), then a short fuzz run of FUZZ_TARGETS; needs redis-server and node
	@$(MAKE) check-redis
	@$(MAKE) check-node
	@$(MAKE) check-fmt
	@# vet with -race: the packages it compiles for type information are
	@# then the very ones go test -race links, so a machine with no build
	@# cache compiles the dependencies once instead of twice (measured from
	@# an empty GOCACHE, vet + the race test build: 628 s plain, 326 s so).
	@# No file of the module depends on the race build tag.
	$(GO) vet -race $(PKGS)
	@# The fuzz smoke run goes beside go test, not after it (its ~30 s are
	@# mostly building instrumented binaries, and go test leaves a core
	@# partly idle while its suites wait); its output comes after go test's.
	@fuzzlog="$$(mktemp)"; \
	( $(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME) >"$$fuzzlog" 2>&1; echo $$? >"$$fuzzlog.rc" ) & \
	echo "$(GO_TEST)"; $(GO_TEST); \
	status=$$?; wait; \
	echo "fuzz smoke run ($(TEST_FUZZTIME) a target):"; cat "$$fuzzlog"; \
	fuzzrc="$$(cat "$$fuzzlog.rc" 2>/dev/null || echo 1)"; rm -f "$$fuzzlog" "$$fuzzlog.rc"; \
	[ "$$status" -eq 0 ] && [ "$$fuzzrc" -eq 0 ]

# The JS client's tests need a real gateway: go test ./clients/js/ starts
# redis-server and a gateway and runs `node --test` against them (part of
# `make test` through ./...); ./tests/uitest/ drives its browser transports in
# Chromium.
test-js: ## only the JavaScript client's tests: node --test and Chromium, against real gateways
	@$(MAKE) check-redis
	@$(MAKE) check-node
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) -run 'TestNode|TestJSClient' ./clients/js/ ./tests/uitest/

fuzz: ## fuzz each of FUZZ_TARGETS (package:FuzzName) for FUZZTIME; new crashers land in the package's testdata/fuzz
	@for t in $(FUZZ_TARGETS); do \
		pkg="$${t%%:*}"; name="$${t#*:}"; \
		if [ "$$pkg" = "$$t" ] || [ -z "$$name" ]; then \
			echo >&2 "make fuzz: bad FUZZ_TARGETS entry '$$t' (want ./package:FuzzName)"; exit 2; \
		fi; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
	done

lint: ## gofmt check, go vet, and staticcheck when installed (runs all three, fails if any failed)
	@status=0; \
	$(MAKE) check-fmt || status=1; \
	echo "$(GO) vet $(PKGS)"; $(GO) vet $(PKGS) || status=1; \
	sc="$$(command -v staticcheck || true)"; \
	if [ -z "$$sc" ] && [ -x "$$($(GO) env GOPATH)/bin/staticcheck" ]; then sc="$$($(GO) env GOPATH)/bin/staticcheck"; fi; \
	if [ -n "$$sc" ]; then echo "staticcheck $(PKGS)"; "$$sc" $(PKGS) || status=1; \
	else echo "staticcheck not installed: skipped (go install honnef.co/go/tools/cmd/staticcheck@latest)"; fi; \
	exit $$status

fmt: ## rewrite every Go file with gofmt
	@files="$(GOFILES)"; [ -z "$$files" ] || gofmt -w $$files

certs: $(CERT_DIR)/cert.pem ## self-signed ECDSA P-256 cert+key for localhost, 127.0.0.1 and ::1 in ./certs (365 days)
	@echo "TLS: POPBOX_TLS_CERT=$(CERT_DIR)/cert.pem POPBOX_TLS_KEY=$(CERT_DIR)/key.pem make run"
	@echo "     (clients: curl --cacert $(CERT_DIR)/cert.pem https://localhost:3002/)"

$(CERT_DIR)/cert.pem:
	@command -v openssl >/dev/null 2>&1 || { echo >&2 "make certs: openssl is not on PATH (apt-get install openssl)"; exit 1; }
	@mkdir -p $(CERT_DIR)
	@umask 077; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 -days 365 \
		-subj "/CN=localhost" \
		-addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
		-addext "basicConstraints=critical,CA:FALSE" \
		-addext "keyUsage=critical,digitalSignature" \
		-addext "extendedKeyUsage=serverAuth" \
		-keyout $(CERT_DIR)/key.pem -out $(CERT_DIR)/cert.pem.tmp 2>/dev/null
	@chmod 644 $(CERT_DIR)/cert.pem.tmp && mv $(CERT_DIR)/cert.pem.tmp $(CERT_DIR)/cert.pem
	@echo "wrote $(CERT_DIR)/cert.pem and $(CERT_DIR)/key.pem"

bench: ## reduced benchmark suite, under 10 min, beside Centrifugo (CENTRIFUGO_BIN); rewrites docs/BENCHMARKS.md (go run ./loadtest bench BENCH_ARGS)
	@$(MAKE) bench-peer
	$(GO) run ./loadtest bench $(BENCH_ARGS) $(if $(CENTRIFUGO_BIN),$$([ -x "$(CENTRIFUGO_BIN)" ] && echo --centrifugo $(CENTRIFUGO_BIN)))

bench-full: ## full benchmark suite (100K connections over 6 gateways), long and large
	@$(MAKE) bench-peer
	$(GO) run ./loadtest bench $(BENCH_FULL_ARGS) $(BENCH_ARGS) $(if $(CENTRIFUGO_BIN),$$([ -x "$(CENTRIFUGO_BIN)" ] && echo --centrifugo $(CENTRIFUGO_BIN)))

centrifugo: ## build the benchmark peer CENTRIFUGO_BIN: Centrifugo CENTRIFUGO_VERSION from the Go module proxy (a few minutes of CPU, once)
	@tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
	set -x; GOBIN="$$tmp" $(GO) install -ldflags "$(CENTRIFUGO_LDFLAGS)" github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION); set +x; \
	mkdir -p "$(dir $(CENTRIFUGO_BIN))"; mv "$$tmp/centrifugo" "$(CENTRIFUGO_BIN)"; \
	echo "built $(CENTRIFUGO_BIN): $$($(CENTRIFUGO_BIN) version)"

bench-go: ## Go micro-benchmarks of the hot paths: go test -bench . -benchmem (needs redis-server)
	@$(MAKE) check-redis
	$(GO) test -run '^$$' -bench . -benchmem $(TEST_FLAGS) $(PKGS)

clean: ## remove build, test and coverage outputs (keeps ./certs)
	rm -rf $(BIN_DIR) artifacts test-artifacts coverage.out coverage.html coverage.txt cover.out profile.out *.test
	find . -type f \( -name '*.test' -o -name '*.prof' \) -not -path './.git/*' -print -delete

# Internal steps.

# bench-peer builds the peer when CENTRIFUGO_BIN is set and missing; a
# failure (no module proxy, say) is reported and the suite goes on without it.
bench-peer:
	@if [ -n "$(CENTRIFUGO_BIN)" ] && [ ! -x "$(CENTRIFUGO_BIN)" ]; then \
		echo "make bench: building the comparison peer $(CENTRIFUGO_BIN) (once; CENTRIFUGO_BIN= skips it)"; \
		$(MAKE) centrifugo || echo >&2 "make bench: could not build $(CENTRIFUGO_BIN); the Centrifugo rows will say 'peer not run'"; \
	fi

check-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
		echo >&2 "make: redis-server is not on PATH, and the tests start real Redis servers."; \
		echo >&2 "      Install it (Debian/Ubuntu: apt-get install redis-server redis-tools) or run .ci/run."; \
		exit 1; }

check-node:
	@command -v node >/dev/null 2>&1 || { \
		echo >&2 "make: node is not on PATH, and the JavaScript client's tests run under node --test."; \
		echo >&2 "      Install Node 20 or newer (Debian/Ubuntu: apt-get install nodejs) or run .ci/run."; \
		exit 1; }

check-fmt:
	@files="$(GOFILES)"; unformatted="$$( [ -z "$$files" ] || gofmt -l $$files )"; \
	if [ -n "$$unformatted" ]; then \
		echo >&2 "gofmt: these files are not formatted (run 'make fmt'):"; echo >&2 "$$unformatted"; exit 1; \
	else echo "gofmt: ok"; fi
