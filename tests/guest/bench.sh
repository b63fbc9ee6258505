#!/bin/sh
# tests/guest/bench.sh - `make bench` inside the emulated machine (one
# CPU): the same client (vmbench) on rvmx, then on KVM, in the same boot.
MODDIR=/lib/modules/$(uname -r)/extra
if insmod $MODDIR/rvmx.ko; then
	vmbench /dev/rvmx
	rmmod rvmx || echo "not ok - rmmod rvmx"
else
	echo "not ok - insmod rvmx"
fi
if modprobe kvm_intel; then
	vmbench /dev/kvm
	rmmod kvm_intel && rmmod kvm
else
	echo "not ok - modprobe kvm_intel"
fi
