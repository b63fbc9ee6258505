# Makefile: the project's commands. `make check` runs every test, `make demo`
# the main job; both install and build what they need (tools/setup).
# `make check-kasan` runs every test again on a KASAN kernel; `make bench`
# compares rvmx with KVM.
# Build against your own kernel: make KDIR=/lib/modules/$(uname -r)/build
KDIR ?=
RVMX_CACHE ?= /var/cache/rvmx
# The test kernel (tools/lib.sh): $(RVMX_CACHE)/kernel, or kernel-kasan for
# `make check-kasan`.
RVMX_KERNEL ?= $(RVMX_CACHE)/kernel
RUSTC ?= /usr/bin/rustc
BINDGEN ?= $(RVMX_CACHE)/bindgen/bin/bindgen
# make module CLIPPY=1: also run clippy (Debian's, matching RUSTC) with the
# kernel's lints; make check does, and counts any warning as a failure.
CLIPPY ?=
CLIPPY_DRIVER ?= /usr/bin/clippy-driver

.PHONY: all module setup check check-kasan bench demo demo-sample install kernel-deb clean clean-module

all: module

setup:
	tools/setup

# With no KDIR, build against the project's test kernel (made by setup).
module:
ifeq ($(KDIR),)
	tools/setup
	$(MAKE) -C $(RVMX_KERNEL) M=$(CURDIR) LLVM=1 RUSTC=$(RUSTC) BINDGEN=$(BINDGEN) CLIPPY=$(CLIPPY) CLIPPY_DRIVER=$(CLIPPY_DRIVER) modules
else
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 modules
endif

check:
	tools/check

# On a VT-x machine running your own Rust-enabled kernel (see README, "On
# real hardware"): installs rvmx.ko under /lib/modules/<release>/extra
# (INSTALL_MOD_PATH=DIR installs under DIR instead) and a udev rule that
# gives /dev/rvmx to group RVMX_GROUP (default kvm, as /dev/kvm), mode 0660.
# Load it with `sudo modprobe rvmx`.
RVMX_GROUP ?= kvm
install:
ifeq ($(KDIR),)
	@echo "make install: set KDIR to your kernel's build tree, e.g. KDIR=/lib/modules/\$$(uname -r)/build" >&2; exit 1
endif
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1 INSTALL_MOD_DIR=extra modules_install
	mkdir -p $(INSTALL_MOD_PATH)/etc/udev/rules.d
	printf '%s\n' 'KERNEL=="rvmx", GROUP="$(RVMX_GROUP)", MODE="0660"' >$(INSTALL_MOD_PATH)/etc/udev/rules.d/60-rvmx.rules
	@echo "rvmx: installed; load it with: sudo modprobe rvmx (after rmmod kvm_intel kvm)"

# Debian packages of a Rust-enabled 6.12 kernel (Debian's config + Rust) to
# run rvmx on, in build/kernel-deb (tools/kernel-deb; README, "On real
# hardware"). KCONFIG=FILE starts from another config; LOCALMODCONFIG=1
# keeps only the modules loaded now (LSMOD=FILE: another machine's lsmod).
kernel-deb:
	tools/kernel-deb

# The whole suite on a second test kernel with KASAN (tools/kernel-kasan.config;
# built and cached apart, once). Not part of `make check`: see README.
check-kasan:
	RVMX_FLAVOR=kasan tools/check

# rvmx against KVM, same guests, same boot, on a production kernel and on
# the test kernel (tools/bench; tables, build/bench/bench.json, docs/bench.svg).
# A benchmark, not part of `make check`.
bench:
	tools/bench

# Debian's QEMU boots Linux on rvmx (HW=1: on this machine's VT-x).
demo:
	tools/demo

# The 64-bit sample guest under rvmx-run, and its VM exits.
demo-sample:
	tools/demo sample

# The module's build products only (tools/bench switches kernels with it).
clean-module:
	rm -f *.o *.ko *.mod *.mod.c *.mod.o .*.cmd modules.order Module.symvers *.rmeta .*.d kglue/*.o kglue/.*.cmd kglue/kglue_generated.rs

clean: clean-module
	rm -rf build
