#!/bin/sh
# tests/guest/qemu.sh - runs inside the emulated VT-x machine: Debian's own
# QEMU 7.2, unchanged, boots the test kernel (tests/guest/qemu-guest-init as
# its init) with -accel kvm and the interrupt controllers in userspace
# (kernel-irqchip=off), first on KVM (the reference) and then on rvmx
# through tools/qemu-rvmx, in the same boot. QEMU, its libraries and
# firmware, and the guest come from the boot CD-ROM (tools/qemu-bundle).
#
#   qemu.sh [HYPERVISOR:MACHINE ...]   default: kvm:isapc rvmx:isapc
#
# Prints TAP.
MODDIR=/lib/modules/$(uname -r)/extra
CD=/cdrom
n=0; fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }

# The machine types, with what each needs from -cpu (see README, "QEMU"):
# isapc's default CPU is a 486, which cannot run a 64-bit kernel.
machine_args() {
	case $1 in
	isapc) echo "-M isapc -cpu qemu64" ;;
	isapc-noapic) echo "-M isapc -cpu qemu64,-apic" ;;
	microvm) echo "-M microvm,pit=on,pic=on,rtc=on,isa-serial=on" ;;
	pc) echo "-M pc" ;;
	pc-smp) echo "-M pc -smp 2" ;;
	esac
}

# boot HYPERVISOR MACHINE: QEMU boots the guest; its output in /tmp/qemu-$1-$2.out.
boot() {
	hv=$1; m=$2; out=/tmp/qemu-$hv-$m.out
	case $hv in
	kvm) rmmod rvmx 2>/dev/null; modprobe kvm_intel || { not_ok "$hv $m: modprobe kvm_intel"; return; }; wrap= ;;
	rvmx) rmmod kvm_intel kvm 2>/dev/null; [ -c /dev/rvmx ] || insmod $MODDIR/rvmx.ko; wrap=qemu-rvmx ;;
	esac
	echo "# $hv $m: starting QEMU ($(cut -d' ' -f1 /proc/uptime) s)"
	t0=$(cut -d' ' -f1 /proc/uptime)
	# shellcheck disable=SC2046
	vm_exits timeout -s KILL ${QEMU_TIMEOUT:-3000} $wrap $CD/qemu/lib/ld-linux-x86-64.so.2 --library-path $CD/qemu/lib \
		$CD/qemu/qemu-system-x86_64 -L $CD/qemu/share \
		-accel kvm,kernel-irqchip=off $(machine_args $m) -m 96 -no-reboot \
		-display none -monitor none -serial stdio -nodefaults \
		-kernel $CD/guest/bzImage -initrd $CD/guest/initrd.gz \
		-append "console=ttyS0,115200 panic=-1 loglevel=4 tsc_early_khz=200000" \
		2>&1 | tee $out
	st=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "# $hv $m: QEMU ended after $(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }') s (emulated)"
	if grep -q "guest: done" $out; then ok "$hv $m: QEMU booted Linux to user mode and back"; else not_ok "$hv $m: QEMU booted Linux to user mode and back"; fi
}

echo "TAP version 13"
[ -d $CD/qemu ] || { echo "1..0 # no QEMU bundle on the CD-ROM"; exit 1; }
set -- ${@:-kvm:isapc rvmx:isapc}
echo "1..$#"
for hm in "$@"; do boot "${hm%%:*}" "${hm#*:}"; done
[ $fails -eq 0 ]
