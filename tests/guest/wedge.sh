#!/bin/sh
# tests/guest/wedge.sh - runs inside the emulated VT-x machine, in a boot of
# its own: guests whose exception delivery would never end on a hypervisor
# that does not intercept #AC and #DB (exits/exception.rs), on rvmx and
# then on KVM. A regression loses an emulated CPU for good: then this boot
# never finishes, and tools/check counts its time-out as a failure, which
# costs this boot and not the rest of the suite. Prints TAP.
MODDIR=/lib/modules/$(uname -r)/extra
n=0; fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }
sub() {
	name=$1; shift
	"$@" > /tmp/sub.out 2>&1; rc=$?
	sed 's/^/    /' /tmp/sub.out
	if [ $rc -eq 0 ]; then ok "$name"; else not_ok "$name" "exit status $rc"; fi
}

echo "TAP version 13"
echo "1..6"
if insmod $MODDIR/rvmx.ko; then ok "insmod rvmx"; else not_ok "insmod rvmx"; fi
sub "endless #AC and #DB delivery end on rvmx (subtests)" exceptions /dev/rvmx wedge
if rmmod rvmx; then ok "rvmx unloads"; else not_ok "rvmx unloads" "$(grep ^rvmx /proc/modules)"; fi
if modprobe kvm_intel; then ok "modprobe kvm_intel"; else not_ok "modprobe kvm_intel"; fi
sub "the same on KVM (subtests)" exceptions /dev/kvm wedge
if rmmod kvm_intel && rmmod kvm; then ok "kvm unloads"; else not_ok "kvm unloads"; fi
[ $fails -eq 0 ]
