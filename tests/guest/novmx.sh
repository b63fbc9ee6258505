#!/bin/sh
# tests/guest/novmx.sh - runs inside QEMU (TCG: a CPU without VMX). rvmx
# must refuse to load with ENODEV and a clear message, leaving nothing.
MODDIR=/lib/modules/$(uname -r)/extra
n=0; fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }

echo "TAP version 13"
echo "1..4"
if grep -qw vmx /proc/cpuinfo; then not_ok "this machine has no VMX" "cpuinfo shows vmx"; else ok "this machine has no VMX"; fi
out=$(insmod $MODDIR/rvmx.ko 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "No such device"; then ok "insmod rvmx fails with ENODEV"; else not_ok "insmod rvmx fails with ENODEV" "rc=$rc $out"; fi
if dmesg | grep -q "rvmx: this CPU has no VMX"; then ok "the kernel log says why"; else not_ok "the kernel log says why"; fi
if ! grep -q "^rvmx " /proc/modules && [ ! -e /dev/rvmx ]; then ok "no module and no /dev/rvmx left behind"; else not_ok "no module and no /dev/rvmx left behind"; fi
[ $fails -eq 0 ]
