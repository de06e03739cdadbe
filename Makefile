# mpqemu build driver: dependencies -> pinned QEMU source -> overlay this tree -> configure -> build.
# SPDX-License-Identifier: GPL-2.0-or-later

SHELL := /bin/bash
TOP := $(CURDIR)
BUILD := $(TOP)/build
QSRC := $(BUILD)/qemu-src
QBUILD := $(BUILD)/qemu-build
export MPQEMU_CACHE ?= $(HOME)/.cache/mpqemu

# Directories of this tree that QEMU's meson sees as its mpqemu/ subdirectory.
OVERLAY := meson.build link hw-proxy remote-machine tests include qapi
# QAPI schema modules of this tree, seen by QEMU's qapi/ (patch 0004 includes them).
QAPI_MODULES := mpqemu.json mpqemu-qom.json
PATCHES := $(sort $(wildcard qemu/patches/*.patch))
FIRMWARE_DIRS := /usr/share/qemu /usr/share/seabios /usr/lib/ipxe/qemu

.PHONY: all deps qemu demo check check-qtest check-functional bench bench-profile soak guest \
	clean distclean fuzz check-sanitizers

all: qemu

deps:
	@scripts/install-deps.sh

# Unpack the pinned QEMU release and apply the hook patches.
$(BUILD)/.src-stamp: qemu/pin $(PATCHES) scripts/fetch-qemu.sh | deps
	rm -rf $(QSRC) $(QBUILD)
	mkdir -p $(QSRC)
	tarball=$$(scripts/fetch-qemu.sh) && tar -xf "$$tarball" -C $(QSRC) --strip-components=1
	for p in $(PATCHES); do patch -d $(QSRC) -p1 --forward --quiet < $$p || exit 1; done
	mkdir -p $(QSRC)/mpqemu
	for d in $(OVERLAY); do ln -sfn $(TOP)/$$d $(QSRC)/mpqemu/$$d; done
	for m in $(QAPI_MODULES); do ln -sfn $(TOP)/qapi/$$m $(QSRC)/qapi/$$m; done
	touch $@

$(BUILD)/.configure-stamp: $(BUILD)/.src-stamp qemu/configure-options
	rm -rf $(QBUILD)
	mkdir -p $(QBUILD)
	cd $(QBUILD) && $(QSRC)/configure $$(grep -v '^#' $(TOP)/qemu/configure-options)
	touch $@

# ninja decides what is stale; the bundle links let build/qemu-system-x86_64
# find Debian's firmware when run from the build tree.
qemu: $(BUILD)/.configure-stamp
	ninja -C $(QBUILD) qemu-system-x86_64 modules mpqemu-tests
	for d in $(FIRMWARE_DIRS); do \
	    mkdir -p $(QBUILD)/qemu-bundle$$(dirname $$d); \
	    ln -sfn $$d $(QBUILD)/qemu-bundle$$d; done
	ln -sfn qemu-build/qemu-system-x86_64 $(BUILD)/qemu-system-x86_64

guest: deps
	@scripts/build-guest.sh

demo: qemu guest
	scripts/demo.sh

check: qemu guest
	scripts/run-tests.sh

bench: qemu guest
	scripts/bench.sh

# Why the bench's figures are what they are: per-thread CPU, sleeps and system
# calls per random read, in-process next to proxied (PROFILE_ARGS, e.g. --jobs 16,
# --block 1048576)
bench-profile: qemu guest
	scripts/install-deps.sh --profile
	scripts/bench.sh --io-profile $(PROFILE_ARGS)

# Each disk controller under queue-depth-16 random reads, SOAK_SECONDS each:
# a stall that comes once in minutes of load fails it.
export SOAK_SECONDS ?= 300
soak: qemu guest
	scripts/run-tests.sh soak/

# libFuzzer targets of both sides of the link, FUZZ_SECONDS each (docs/fuzzing.md)
export FUZZ_SECONDS ?= 60
fuzz: qemu
	scripts/install-deps.sh --fuzz
	scripts/fuzz.sh

# QEMU built again with ASan and UBSan (build/qemu-build-san), then every test
check-sanitizers: $(BUILD)/.src-stamp guest
	scripts/check-sanitizers.sh

clean:
	rm -rf $(BUILD)

distclean: clean
	rm -rf $(MPQEMU_CACHE)
