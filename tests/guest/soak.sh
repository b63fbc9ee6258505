#!/bin/sh
# tests/guest/soak.sh LINES - runs inside the emulated machine for
# tools/vm-soak: writes LINES lines both to the VGA console (tty1, which
# Bochs' term display draws) and to the serial console, then says how many.
# Before issue 8's fix, some 64 KiB of screen updates froze Bochs for good.
n=${1:-2000}
[ -e /dev/tty1 ] || { echo "soak: no /dev/tty1 (VGA console) in this kernel"; exit 1; }
exec 3>/dev/tty1
i=0
while [ $i -lt "$n" ]; do
	i=$((i + 1))
	line="soak $i of $n: the quick brown fox jumps over the lazy dog 0123456789"
	echo "$line"
	echo "$line" >&3
done
echo "soak: wrote $i lines"
