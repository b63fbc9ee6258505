#!/bin/sh
# tests/guest/vm.sh - runs inside the emulated VT-x machine with no
# hypervisor module loaded. Runs the guest and ioctl-error selftests on
# rvmx, checks that rvmx then unloads (nothing leaked or still referenced),
# and runs the same selftests on KVM (kvm_intel) in the same boot: the guest-
# visible results must be the same, except where README lists a deliberate
# difference (those checks branch on the device). Prints TAP.
MODDIR=/lib/modules/$(uname -r)/extra
n=0; fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }
# sub NAME PROGRAM ARGS...: run a TAP program, indent its lines, report it.
sub() {
	name=$1; shift
	"$@" > /tmp/sub.out 2>&1; rc=$?
	sed 's/^/    /' /tmp/sub.out
	if [ $rc -eq 0 ]; then ok "$name"; else not_ok "$name" "exit status $rc"; fi
}

echo "TAP version 13"
echo "1..38"
if insmod $MODDIR/rvmx.ko; then ok "insmod rvmx"; else not_ok "insmod rvmx"; fi
sub "guests on rvmx (subtests)" guests /dev/rvmx
sub "exceptions rvmx delivers itself: single step, RF, DR6, DR7.GD, #AC (subtests)" exceptions /dev/rvmx
sub "VM and vCPU ioctl errors on rvmx (subtests)" vm_errors /dev/rvmx
sub "SMP guests and migration on rvmx (subtests)" smp /dev/rvmx
sub "the vCPU stays loaded: 1,000 CPU moves, CPU offline, suspend with its VMCS active on rvmx (subtests)" loaded /dev/rvmx
sub "interrupts, MSRs, CPUID on rvmx (subtests)" events /dev/rvmx
sub "what QEMU 7.2 needs: capabilities, MP state, its MSRs, firmware instructions on rvmx (subtests)" qemu_abi /dev/rvmx
sub "the CPU the supported CPUID promises, string-I/O segment types, CR4.MCE on rvmx (subtests)" cpu_rules /dev/rvmx
sub "dirty logging, slot changes, FPU state on rvmx (subtests)" memory /dev/rvmx
sub "guest memory follows the VMM's mapping, is not pinned, and can be swapped out, on rvmx (subtests)" mapping /dev/rvmx
sub "exit-path benchmark on rvmx" bench /dev/rvmx
sub "failed VM entries named by their SDM check on rvmx (subtests)" entry_checks /dev/rvmx
sub "binary statistics (KVM_GET_STATS_FD) on rvmx (subtests)" stats /dev/rvmx
sub "tracepoints rvmx:* in tracefs and perf on rvmx (subtests)" trace /dev/rvmx
sub "ioctl fuzzer: 100,000 random calls on rvmx (subtests)" fuzz_ioctl /dev/rvmx 100000
sub "lifecycle races: close, munmap, fork, kill -9, exit under running vCPUs; 500 VMs (subtests)" lifecycle /dev/rvmx
# Hostile guests, with the host's per-CPU registers (MSRs, DR7, DEBUGCTL,
# XCR0, CR0/CR4) read by vmxprobe.ko before and after: they must not move.
# The guest's STAR, LSTAR, CSTAR, SFMASK and TSC_AUX stay in a CPU until it
# next returns to user mode (as in KVM: a user-return notifier puts the
# host's back; msrs/mod.rs), which is when the host needs them: a user program
# run on each CPU first makes the reading what user mode would see.
hoststate() {
	for cpu in $(seq 0 $(($(nproc) - 1))); do taskset -c $cpu true; done
	insmod $MODDIR/vmxprobe.ko tag=$1 hoststate=1 2>/dev/null
	# busybox insmod retries a refused module once: one line per CPU.
	dmesg | grep "vmxprobe $1: cpu[0-9]* hoststate" | sed "s/.*vmxprobe $1: //" | sort -u
}
hoststate before > /tmp/hoststate.before
sub "hostile guests on rvmx: random code, sensitive instructions (subtests)" hostile /dev/rvmx 40
hoststate after > /tmp/hoststate.after
if [ -s /tmp/hoststate.before ] && cmp -s /tmp/hoststate.before /tmp/hoststate.after && ! grep -q NOT /tmp/hoststate.after; then
	ok "host MSRs, DR7, DEBUGCTL, XCR0, CR0, CR4 of every CPU unchanged by the hostile guests ($(wc -l < /tmp/hoststate.before) CPUs)"
else
	not_ok "host MSRs, DR7, DEBUGCTL, XCR0, CR0, CR4 of every CPU unchanged by the hostile guests"
	diff /tmp/hoststate.before /tmp/hoststate.after | sed 's/^/# /'
	grep NOT /tmp/hoststate.after | sed 's/^/# /'
fi
# Leaks: with every VM closed, nothing rvmx allocated may be left
# unreferenced. kmemleak (in the test kernel, no periodic scans) is asked
# for scans. leaker.ko leaks objects on purpose first: the scans must find
# them, or they prove nothing.
insmod $MODDIR/leaker.ko
if [ -w /sys/kernel/debug/kmemleak ]; then
	# kmemleak reports an object older than 5 s that two scans in a row
	# found unreferenced and unchanged; a third scan for good measure.
	sleep 6
	for i in 1 2 3; do echo scan > /sys/kernel/debug/kmemleak; sleep 2; done
	cat /sys/kernel/debug/kmemleak > /tmp/leaks.txt
	all=$(grep -c '^unreferenced object' /tmp/leaks.txt)
	rmmod leaker
	if ! grep -q leaker_alloc /tmp/leaks.txt; then
		not_ok "kmemleak: no leak from rvmx after every test" "kmemleak did not find leaker.ko's deliberate leak: it is not working"
		sed 's/^/# /' /tmp/leaks.txt | head -40
	elif grep -q rvmx /tmp/leaks.txt; then
		not_ok "kmemleak: no leak from rvmx after every test" "$(grep -c rvmx /tmp/leaks.txt) lines mention rvmx"
		sed 's/^/# /' /tmp/leaks.txt | head -80
	else
		ok "kmemleak: no leak from rvmx after every test (it found $(grep -c leaker_alloc /tmp/leaks.txt) of leaker.ko's 16 deliberate ones; $all unreferenced objects in all)"
	fi
else
	not_ok "kmemleak: no leak from rvmx after every test" "no /sys/kernel/debug/kmemleak in the test kernel"
fi
if rmmod rvmx; then ok "rvmx unloads after the VMs are closed"; else not_ok "rvmx unloads after the VMs are closed" "$(grep ^rvmx /proc/modules)"; fi
if modprobe kvm_intel; then ok "modprobe kvm_intel"; else not_ok "modprobe kvm_intel"; fi
sub "the same guests on KVM (subtests)" guests /dev/kvm
sub "the same exceptions on KVM (subtests)" exceptions /dev/kvm
sub "the same ioctl errors on KVM (subtests)" vm_errors /dev/kvm
sub "the same SMP guests on KVM (subtests)" smp /dev/kvm
sub "the same moves, offline and suspend on KVM (subtests)" loaded /dev/kvm
sub "the same events on KVM (subtests)" events /dev/kvm
sub "the same QEMU needs on KVM (subtests)" qemu_abi /dev/kvm
sub "the same CPU promises on KVM (subtests)" cpu_rules /dev/kvm
sub "the same memory tests on KVM (subtests)" memory /dev/kvm
sub "the same mapping changes, no pins and swap on KVM (subtests)" mapping /dev/kvm
sub "the same benchmark on KVM" bench /dev/kvm
sub "the same failed VM entries on KVM (subtests)" entry_checks /dev/kvm
sub "the same statistics on KVM (subtests)" stats /dev/kvm
sub "the same trace with kvm:* tracepoints on KVM (subtests)" trace /dev/kvm
sub "the same sensitive instructions on KVM (subtests)" hostile /dev/kvm
# Where rvmx and KVM end the same sensitive instruction differently (for
# the record: an MSR one accepts and the other refuses, say).
if [ -f /tmp/hostile.rvmx.txt ] && [ -f /tmp/hostile.kvm.txt ]; then
	# busybox diff writes unified diffs: "-" is rvmx's line, "+" KVM's.
	diff -U0 /tmp/hostile.rvmx.txt /tmp/hostile.kvm.txt | grep '^[-+][^-+]' > /tmp/hostile.diff
	echo "# sensitive instructions ending differently on rvmx (-) and KVM (+): $(grep -c '^-' /tmp/hostile.diff)"
	sed 's/^/#   /' /tmp/hostile.diff
fi
if rmmod kvm_intel && rmmod kvm; then ok "kvm unloads"; else not_ok "kvm unloads"; fi
[ $fails -eq 0 ]
