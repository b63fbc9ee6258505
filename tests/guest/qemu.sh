#!/bin/sh
# tests/guest/qemu.sh - runs inside the emulated VT-x machine: Debian's own
# QEMU 7.2, unchanged, boots the test kernel (tests/guest/qemu-guest-init as
# its init) with -accel kvm and the interrupt controllers in userspace
# (kernel-irqchip=off), on KVM (the reference) and on rvmx through
# tools/qemu-rvmx, in the same boot. QEMU, its libraries and firmware, and
# the guest come from the boot CD-ROM (tools/qemu-bundle). After each boot,
# vm_exits prints the VM exits it took, from QEMU's own `info stats vcpu`.
#
#   qemu.sh [HYPERVISOR:MACHINE ...]   default: kvm:isapc rvmx:isapc kvm:pc rvmx:pc
#
# QEMU_DEMO=1 (make demo) shows the boot as a product, not a test: no TAP,
# no check of the wrapper, a line on each QEMU warning that remains, and
# one verdict at the end.
#
# QEMU_TIMEOUT (emulated seconds per boot, default 600), QEMU_APPEND (more
# guest kernel parameters) and QEMU_ARGS (more QEMU options, say
# "-D /tmp/trace.log -trace kvm_run_exit") help with experiments. Prints TAP:
# one check of tools/qemu-rvmx, then three checks per boot, four with two
# vCPUs.
MODDIR=/lib/modules/$(uname -r)/extra
CD=/cdrom
n=0; fails=0
ok() { n=$((n + 1)); [ -n "${QEMU_DEMO:-}" ] || echo "ok $n - $1"; }
not_ok() {
	n=$((n + 1)); fails=$((fails + 1))
	if [ -n "${QEMU_DEMO:-}" ]; then echo "demo: failed: $1${2:+ ($2)}"; else echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; fi
}
# expect NAME FILE PATTERN...: FILE contains every PATTERN (grep -F).
expect() {
	name=$1; file=$2; shift 2
	for p in "$@"; do
		if ! grep -qF -- "$p" "$file"; then
			not_ok "$name" "missing: $p"
			return
		fi
	done
	ok "$name"
}

# The machine types, with what each needs from -cpu (see README, "QEMU"):
# isapc's default CPU is a 486, which cannot run a 64-bit kernel, and with
# qemu64's local APIC but no I/O APIC Linux 6.12 oopses in check_timer
# (on KVM as on rvmx), so isapc runs qemu64 without its APIC. pc keeps its
# default CPU (qemu64, with a local APIC that QEMU emulates in userspace).
machine_args() {
	case $1 in
	isapc) echo "-M isapc -cpu qemu64,-apic" ;;
	microvm) echo "-M microvm,pit=on,pic=on,rtc=on,isa-serial=on" ;;
	pc) echo "-M pc" ;;
	pc-smp) echo "-M pc -smp 2" ;;
	*) echo "-M $1" ;;
	esac
}

# boot HYPERVISOR MACHINE: QEMU boots the guest; its output in /tmp/qemu-$1-$2.out.
boot() {
	hv=$1; m=$2; out=/tmp/qemu-$hv-$m.out
	# With KVM unloaded, a /dev/kvm is the node tools/qemu-rvmx made for
	# the last rvmx boot, removed a moment after that QEMU exited: KVM's
	# own node cannot be made over it, and removing it would also take
	# away the next rvmx boot's bind mount over it.
	i=0
	while [ -e /dev/kvm ] && [ ! -d /sys/module/kvm ] && [ $i -lt 10 ]; do sleep 1; i=$((i + 1)); done
	case $hv in
	kvm) rmmod rvmx 2>/dev/null; modprobe kvm_intel || { not_ok "$hv $m: modprobe kvm_intel"; return; }; wrap= ;;
	rvmx) rmmod kvm_intel kvm 2>/dev/null; [ -c /dev/rvmx ] || insmod $MODDIR/rvmx.ko; wrap=qemu-rvmx ;;
	esac
	t0=$(cut -d' ' -f1 /proc/uptime)
	echo "# $hv $m: QEMU starts at $t0 s"
	# shellcheck disable=SC2046
	{ vm_exits --timeout ${QEMU_TIMEOUT:-600} timeout -s KILL $((${QEMU_TIMEOUT:-600} + 60)) $wrap \
		$CD/qemu/lib/ld-linux-x86-64.so.2 --library-path $CD/qemu/lib \
		$CD/qemu/qemu-system-x86_64 -L $CD/qemu/share \
		-accel kvm,kernel-irqchip=off $(machine_args $m) -m 96 -no-reboot \
		-display none -monitor none -serial stdio -nodefaults ${QEMU_ARGS:-} \
		-kernel $CD/guest/bzImage -initrd $CD/guest/initrd.gz \
		-append "console=ttyS0,115200 panic=-1 loglevel=4 tsc_early_khz=200000 ${QEMU_APPEND:-}"
	  echo "qemu: exit status $?"; } 2>&1 | tee $out
	t1=$(cut -d' ' -f1 /proc/uptime)
	echo "# $hv $m: QEMU ran $(echo "$t0 $t1" | awk '{ printf "%.1f", $2 - $1 }') s (emulated seconds)"
	expect "$hv $m: QEMU booted Linux to user mode, the guest's commands ran, and QEMU exited 0" $out \
		"guest: user mode reached" "guest: sum of squares 1..2000 = 2668667000" \
		"guest: tmpfs read back: written in the guest" "guest: sleep 1 took" "guest: done" "qemu: exit status 0"
	# The guest's own timer (PIT, local APIC) measured its sleep.
	slept=$(sed -n 's/^guest: sleep 1 took \([0-9.]*\) s.*/\1/p' $out)
	if [ -n "$slept" ] && echo "$slept" | awk '{ exit !($1 >= 0.9 && $1 < 2) }'; then
		ok "$hv $m: sleep 1 in the guest took $slept s by its clock"
	else
		not_ok "$hv $m: sleep 1 in the guest took about 1 s by its clock" "took: '$slept'"
	fi
	expect "$hv $m: the guest kernel's log has no WARN, BUG, oops, soft lockup or unstable TSC" $out "guest: kernel log clean"
	[ -z "${QEMU_DEMO:-}" ] || explain_warnings $out
	# With -smp 2, QEMU's userspace local APIC delivers the guest's INIT
	# and SIPI to the second vCPU, which QEMU then starts (KVM_SET_REGS,
	# KVM_SET_SREGS, KVM_RUN from its own thread).
	case $m in
	*-smp) expect "$hv $m: the guest brought its second CPU online" $out "guest: cpus online: 0-1" ;;
	esac
}

# tools/qemu-rvmx gives its process to the command it runs (exec), so that
# a kill meant for QEMU (timeout's, vm_exits's) reaches QEMU rather than a
# wrapper shell, and the /dev/kvm node it made goes when the command does.
wrapper_check() {
	rmmod kvm_intel kvm 2>/dev/null; [ -c /dev/rvmx ] || insmod $MODDIR/rvmx.ko
	timeout -s KILL 2 qemu-rvmx sleep 97
	i=0; while [ -e /dev/kvm ] && [ $i -lt 5 ]; do sleep 1; i=$((i + 1)); done
	if ps -o args | grep -q '^sleep 97'; then
		not_ok "tools/qemu-rvmx: killing it kills the command" "sleep 97 still runs"
		pkill -f '^sleep 97'
	elif [ -e /dev/kvm ]; then
		not_ok "tools/qemu-rvmx: killing it kills the command" "/dev/kvm left behind"
	else
		ok "tools/qemu-rvmx: killing it kills the command, and its /dev/kvm goes too"
	fi
}

# explain_warnings FILE: a line on each warning QEMU printed that remains
# on rvmx, for make demo.
explain_warnings() {
	if grep -q "Userspace local APIC is deprecated" "$1"; then
		echo "demo: QEMU's APIC warning: rvmx has no local APIC in the kernel yet (issue 25), so QEMU emulates it (kernel-irqchip=off)."
	fi
	if grep -q "doesn't support requested feature" "$1"; then
		echo "demo: QEMU's CPU feature warnings: its default CPU asks for KVM's paravirtual features (kvmclock and others), which rvmx does not offer yet; the guest runs without them."
	fi
}

# checks MACHINE: how many TAP checks boot prints for MACHINE.
checks() { case $1 in *-smp) echo 4 ;; *) echo 3 ;; esac; }

[ -d $CD/qemu ] || { echo "no QEMU bundle on the CD-ROM"; exit 1; }
set -- ${@:-kvm:isapc rvmx:isapc kvm:pc rvmx:pc}
if [ -n "${QEMU_DEMO:-}" ]; then
	for hm in "$@"; do boot "${hm%%:*}" "${hm#*:}"; done
	if [ $fails -eq 0 ]; then
		echo "demo: Debian's QEMU booted Linux to user mode on rvmx and exited cleanly."
	fi
	[ $fails -eq 0 ]
	exit
fi
echo "TAP version 13"
plan=1
for hm in "$@"; do plan=$((plan + $(checks "${hm#*:}"))); done
echo "1..$plan"
wrapper_check
for hm in "$@"; do boot "${hm%%:*}" "${hm#*:}"; done
[ $fails -eq 0 ]
