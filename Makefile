# The monorepo's commands. The tests use Swift Testing only, so XCTest's runner is off. Packages are discovered, never listed: AllocCore in shared/,
# every allocators/<Name>/ that has a Package.swift, and the compare harness.
#
#   make              every package, and libbinnedmalloc.so and libbinnedmalloc-hardened.so
#   make test-all     every package's tests, the thread-sanitizer run of the stress tests,
#                     programs run under both libraries, a Swift executable linking BinnedMalloc,
#                     and the benchmark charts rendered in headless Chromium
#   make soak         every package's randomized model tests under fresh seeds for SOAK_SECONDS
#                     (default 120) in all; prints each failing seed and the command that replays it
#   make bench        release build of compare, full benchmark tables on stdout, one SVG chart
#                     per family in docs/charts, and the heap-misuse battery's table
#   make bench-quick  the short benchmark run CI makes so the harness cannot rot
#   make deps         installs libjemalloc-dev, libmimalloc2.0, libtcmalloc-minimal4 and chromium (apt-get, as
#                     root) or says how
#   make lint         swift format lint over every Swift file, strict
#   make format       rewrites every Swift file in the house style
#   make clean        removes every build folder

SWIFT ?= swift
ALLOCATORS := $(patsubst %/Package.swift,%,$(sort $(wildcard allocators/*/Package.swift)))
PACKAGES := shared $(ALLOCATORS) compare
SWIFT_SOURCES = $(shell find $(PACKAGES) -name '*.swift' -not -path '*/.build*')
BENCH_JSON ?= compare/results/bench.json
BENCH_QUICK_JSON ?= compare/results/bench-quick.json
CHARTS_DIR ?= docs/charts
BENCH_QUICK_CHARTS ?= compare/results/charts-quick
# The house style (4-space indent, 120 columns), kept in .ci/ so the top level stays as the
# layout fixes it.
FORMAT_CONFIG := .ci/swift-format.json
# A race found by the sanitizer stops the run with a report instead of a warning.
TSAN_OPTIONS ?= halt_on_error=1

# One SwiftPM build at a time: two builds of one package share its .build lock, and
# compare builds the allocator packages it depends on.
.NOTPARALLEL:
.PHONY: all build preload test-all test tsan test-preload test-link-in soak bench bench-quick deps lint format clean \
	path-dependency-check chart-check

all: deps build preload

build:
	@set -e; for package in $(PACKAGES); do echo "== swift build: $$package"; $(SWIFT) build --package-path $$package; done

# The peers' libraries are Debian's: jemalloc's headers (the jemalloc worker links it, so the
# build needs them), and mimalloc and tcmalloc, which the driver preloads into a worker; without
# those two, compare runs without their columns and says so (docs/benchmarks.md).
REQUIRED_PACKAGES := libjemalloc-dev pkg-config
PEER_PACKAGES := libmimalloc2.0 libtcmalloc-minimal4
# Chromium renders the benchmark charts for test-all's chart-check, which skips without it.
CHECK_PACKAGES := chromium

deps:
	@command -v $(SWIFT) >/dev/null || { echo "deps: Swift 6.3 is not on PATH (see swift.org/install)"; exit 1; }
	@missing=""; for package in $(REQUIRED_PACKAGES) $(PEER_PACKAGES) $(CHECK_PACKAGES); do \
		dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "deps: $(REQUIRED_PACKAGES) $(PEER_PACKAGES) $(CHECK_PACKAGES) are installed"; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "deps: installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "deps: missing$$missing; run: sudo apt-get install -y$$missing"; \
		case "$$missing" in *libjemalloc-dev*|*pkg-config*) exit 1;; esac; \
		echo "deps: compare runs without the missing peers' columns and says so; chart-check skips without chromium"; \
	fi

test-all: deps test tsan test-preload test-link-in path-dependency-check chart-check

test:
	@set -e; for package in $(PACKAGES); do echo "== swift test: $$package"; $(SWIFT) test --package-path $$package --disable-xctest; done

# Every package whose tests have a suite named *Stress*, under the thread sanitizer, in a
# build folder of its own so the plain build is not thrown away each time. Release mode:
# in a debug build, raw-pointer loads and stores are calls into the (uninstrumented)
# standard library, so the sanitizer would not see the allocators' header accesses.
tsan:
	@set -e; for package in $(PACKAGES); do \
		if grep -rqs 'Stress' $$package/Tests; then \
			echo "== thread sanitizer: $$package"; \
			TSAN_OPTIONS=$(TSAN_OPTIONS) $(SWIFT) test --package-path $$package --disable-xctest -c release \
				--sanitize=thread --scratch-path $$package/.build-tsan --filter Stress; \
		fi; \
	done

# libbinnedmalloc.so: BinnedAlloc under the standard malloc names, with the Swift runtime
# linked in statically (it loads into any process, Swift or not, and needs only libc,
# libm, libstdc++ and libgcc_s) and only the malloc family exported. Its own build folder
# keeps these flags away from the package's ordinary builds.
PRELOAD_PACKAGE := allocators/BinnedAlloc
PRELOAD_LIBRARY := $(PRELOAD_PACKAGE)/.build-preload/release/libbinnedmalloc.so
# The same library with the package trait Hardened (heap-misuse checks that cost time; see
# `Hardening` in BinnedAlloc.swift), in a build folder of its own.
HARDENED_LIBRARY := $(PRELOAD_PACKAGE)/.build-hardened/release/libbinnedmalloc-hardened.so

preload:
	@$(SWIFT) build -c release --package-path $(PRELOAD_PACKAGE) --scratch-path $(PRELOAD_PACKAGE)/.build-preload \
		--product binnedmalloc -Xswiftc -static-stdlib -Xlinker --version-script=$(CURDIR)/$(PRELOAD_PACKAGE)/binnedmalloc.map
	@echo "built $(PRELOAD_LIBRARY)"
	@$(SWIFT) build -c release --package-path $(PRELOAD_PACKAGE) --scratch-path $(PRELOAD_PACKAGE)/.build-hardened \
		--traits Hardened --product binnedmalloc -Xswiftc -static-stdlib \
		-Xlinker --version-script=$(CURDIR)/$(PRELOAD_PACKAGE)/binnedmalloc.map
	@cp $(PRELOAD_PACKAGE)/.build-hardened/release/libbinnedmalloc.so $(HARDENED_LIBRARY)
	@echo "built $(HARDENED_LIBRARY)"

# C programs (GUIDE section 5 row by row, stress, fork, thread churn) and real programs
# (python3's own tests, git, cc) run under the library.
test-preload: preload
	@echo "== programs under LD_PRELOAD=$(PRELOAD_LIBRARY)"
	@bash $(PRELOAD_PACKAGE)/Tests/Preload/run $(PRELOAD_LIBRARY)
	@echo "== programs under LD_PRELOAD=$(HARDENED_LIBRARY)"
	@bash $(PRELOAD_PACKAGE)/Tests/Preload/run $(HARDENED_LIBRARY) hardened

# A Swift executable in a package of its own that depends on BinnedAlloc by path and links
# the BinnedMalloc product, as the README shows: it checks that the whole process, the Swift
# runtime included, allocates from BinnedAlloc (a debug build, as `swift run` makes). Then
# the same executable built with --static-swift-stdlib, the Swift runtime inside it (no
# libswiftCore.so among its libraries), which must pass the same checks; and built with the
# trait Hardened, which must run BinnedAlloc's hardened build.
LINK_IN_PACKAGE := $(PRELOAD_PACKAGE)/Tests/LinkIn
LINK_IN_STATIC := $(LINK_IN_PACKAGE)/.build-static
LINK_IN_HARDENED := $(LINK_IN_PACKAGE)/.build-hardened

test-link-in:
	@echo "== Swift executable linking BinnedMalloc"
	@$(SWIFT) build --package-path $(LINK_IN_PACKAGE) -q
	@BINNEDMALLOC_STATS=1 "$$($(SWIFT) build --package-path $(LINK_IN_PACKAGE) --show-bin-path)/LinkInCheck" \
		2>$(LINK_IN_PACKAGE)/.build/statistics.txt
	@grep -q '^BinnedAlloc statistics' $(LINK_IN_PACKAGE)/.build/statistics.txt || \
		{ echo "BINNEDMALLOC_STATS=1 printed no statistics at exit"; exit 1; }
	@echo "BINNEDMALLOC_STATS=1 printed $$(wc -l < $(LINK_IN_PACKAGE)/.build/statistics.txt) lines of statistics at exit"
	@echo "== the same executable with --static-swift-stdlib"
	@$(SWIFT) build --package-path $(LINK_IN_PACKAGE) --static-swift-stdlib --scratch-path $(LINK_IN_STATIC) -q
	@executable="$$($(SWIFT) build --package-path $(LINK_IN_PACKAGE) --static-swift-stdlib \
		--scratch-path $(LINK_IN_STATIC) --show-bin-path)/LinkInCheck"; \
	if ldd "$$executable" | grep -q libswift; then echo "the static build links a Swift library:"; ldd "$$executable"; exit 1; fi; \
	BINNEDMALLOC_STATS=json "$$executable" 2>$(LINK_IN_STATIC)/statistics.json && \
	grep -q '^{"allocator":"BinnedAlloc"' $(LINK_IN_STATIC)/statistics.json || \
		{ echo "BINNEDMALLOC_STATS=json printed no statistics at exit"; exit 1; }
	@echo "== the same executable with the trait Hardened (BinnedAlloc's hardened build)"
	@$(SWIFT) build --package-path $(LINK_IN_PACKAGE) --traits Hardened --scratch-path $(LINK_IN_HARDENED) -q
	@"$$($(SWIFT) build --package-path $(LINK_IN_PACKAGE) --traits Hardened --scratch-path $(LINK_IN_HARDENED) \
		--show-bin-path)/LinkInCheck"

# The charts in a real browser: compare draws the charts of a small checked-in excerpt of a
# run (no benchmark runs), and headless Chromium renders each to a PNG that must not be blank
# (.ci/chart-check; skipped with a message when Chromium is missing).
CHART_FIXTURE := compare/Tests/Fixtures/bench-excerpt.json
CHART_CHECK_DIR := compare/.build/chart-check

chart-check:
	@echo "== charts of $(CHART_FIXTURE) rendered by headless Chromium"
	@$(SWIFT) build --package-path compare -q
	@rm -rf $(CHART_CHECK_DIR)
	@"$$($(SWIFT) build --package-path compare --show-bin-path)/compare" --charts $(CHART_CHECK_DIR) --from $(CHART_FIXTURE)
	@bash .ci/chart-check $(CHART_CHECK_DIR)

# Builds a throwaway package that depends on every package here by path, as the README
# shows, and imports each library: the README's snippet cannot rot.
path-dependency-check:
	@bash .ci/path-dependency-check shared $(ALLOCATORS)

# The model tests draw a fresh seed per run; the soak runs each under many (AllocTestSupport's
# forEachTestSeed, ALLOC_TEST_SOAK_SECONDS), one test at a time so a failure names its seed.
SOAK_SECONDS ?= 120

soak:
	@SOAK_SECONDS=$(SOAK_SECONDS) SWIFT=$(SWIFT) bash .ci/soak $(ALLOCATORS)

# The real-program rows preload libbinnedmalloc.so, so it is built first. Then the heap-misuse
# battery's table: which allocator stops which misuse.
bench: deps preload
	@$(SWIFT) build -c release --package-path compare
	@BINNEDMALLOC_LIBRARY=$(CURDIR)/$(PRELOAD_LIBRARY) BINNEDMALLOC_HARDENED_LIBRARY=$(CURDIR)/$(HARDENED_LIBRARY) \
		"$$($(SWIFT) build -c release --package-path compare --show-bin-path)/compare" --json $(BENCH_JSON) \
		--charts $(CHARTS_DIR)
	@bash $(PRELOAD_PACKAGE)/Tests/Preload/misuse-table $(PRELOAD_LIBRARY) $(HARDENED_LIBRARY)

bench-quick: deps preload
	@$(SWIFT) build -c release --package-path compare
	@BINNEDMALLOC_LIBRARY=$(CURDIR)/$(PRELOAD_LIBRARY) BINNEDMALLOC_HARDENED_LIBRARY=$(CURDIR)/$(HARDENED_LIBRARY) \
		"$$($(SWIFT) build -c release --package-path compare --show-bin-path)/compare" --quick --json $(BENCH_QUICK_JSON) \
		--charts $(BENCH_QUICK_CHARTS)

lint:
	@$(SWIFT) format lint --configuration $(FORMAT_CONFIG) --strict --parallel $(SWIFT_SOURCES)

format:
	@$(SWIFT) format --configuration $(FORMAT_CONFIG) --in-place --parallel $(SWIFT_SOURCES)

clean:
	@for package in $(PACKAGES); do rm -rf $$package/.build $$package/.build-tsan $$package/.build-preload $$package/.build-hardened; done
	@rm -rf $(LINK_IN_PACKAGE)/.build $(LINK_IN_STATIC) $(LINK_IN_HARDENED)
	@rm -rf compare/results
