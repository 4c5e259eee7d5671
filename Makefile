# Thin wrapper over the CMake presets (CMakePresets.json).
#
#   make            build (release preset)
#   make test       build and run the whole suite   (SAN=1: under ASan+UBSan,
#                                                     SCALAR=1: scalar kernels only)
#   make run        build, then plumb's main job on this machine
#   make bench      benchmarks, results in bench/results/
#   make fuzz       the libFuzzer targets (clang, ASan+UBSan), each for FUZZ_SECONDS
#                   (default 60; FUZZ_TARGETS="gguf oai ..." for some of them)
#   make install    the plumb binary into $(PREFIX)/bin (default /usr/local)
#   make image      plumb's OCI image from scratch (buildah, no network):
#                   localhost/plumb:VERSION and build/image/plumb-VERSION.oci.tar
#   make clean
#
# Every target first runs scripts/install-deps.sh, which installs missing
# Debian packages (and does nothing when all are present).

PRESET ?= release
ifeq ($(SAN),1)
PRESET := san
endif
ifeq ($(SCALAR),1)
PRESET := scalar
endif
BUILD := build/$(PRESET)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PLUMB := $(BUILD)/plumb

.PHONY: all build deps test run bench fuzz install image clean

all: build

deps:
	@./scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake --preset $(PRESET)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build --preset $(PRESET) -j $(JOBS)

TESTDATA ?= $(if $(PLUMB_TESTDATA),$(PLUMB_TESTDATA),../shared/testdata)
test: build
	@[ -d "$(TESTDATA)" ] || echo "note: reference data not found at $(TESTDATA) (set PLUMB_TESTDATA): tests that need it are skipped"
	ctest --preset $(PRESET) -j $(JOBS)

# The main job: what this machine is (measured on the spot, saved as its
# profile) and what it runs well (the catalog ranked on that profile).
run: build
	$(PLUMB) survey --quick
	@echo
	$(PLUMB) plan

# bench/run.sh reads plumb bench's JSON with jq
bench: build
	@./scripts/install-deps.sh jq
	./bench/run.sh $(PLUMB)

# Every parser under libFuzzer (fuzz/README.md): the "fuzz" preset builds
# the targets with clang in build/fuzz, fuzz/run.sh runs each one in turn
# and fails on any crash, sanitizer report, leak, hang or memory blow-up.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
fuzz:
	@./scripts/install-deps.sh clang libclang-rt-dev
	@[ -f build/fuzz/CMakeCache.txt ] || cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)
	./fuzz/run.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# make install [PREFIX=/usr/local]: the plumb binary into PREFIX/bin
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# make image: the release binary, its libraries, CA certificates and a user
# plumb (10001) in an image from scratch, tagged with the version
image: build
	./scripts/image.sh $(PLUMB) "$(IMAGE_TAG)" build/image

clean:
	rm -rf build
