#!/bin/sh
# tests/guest/launcher.sh - runs inside the emulated VT-x machine: the
# sample guests under rvmx-run, on rvmx and then on KVM in the same boot
# (same output expected, except the hypercall line: KVM answers VMCALL in
# the kernel), and rvmx-run's handling of bad input. Prints TAP.
MODDIR=/lib/modules/$(uname -r)/extra
n=0; fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }
# expect NAME FILE PATTERN...: FILE contains every PATTERN (grep -F).
expect() {
	name=$1; file=$2; shift 2
	for p in "$@"; do
		if ! grep -qF -- "$p" "$file"; then
			not_ok "$name" "missing: $p"
			sed 's/^/#   /' "$file"
			return
		fi
	done
	ok "$name"
}
# samples DEVICE: run the sample guests on DEVICE.
samples() {
	dev=$1
	rvmx-run --device $dev --mode real /bin/hello16.bin > /tmp/h.out 2>&1; echo "status $?" >> /tmp/h.out
	expect "$dev: real-mode hello" /tmp/h.out "Hello from a real-mode guest on rvmx!" "status 0"
	rvmx-run --device $dev --mode prot32 /bin/prot32.bin > /tmp/p.out 2>&1; echo "status $?" >> /tmp/p.out
	expect "$dev: protected mode, CPUID, MMIO" /tmp/p.out "32-bit protected mode guest" "CPUID vendor: " \
		"CPUID.1:ECX.VMX = 0" "MMIO device says RVMX" "MMIO register reads back what was written" "bye" "status 0"
	if [ $dev = /dev/rvmx ]; then
		expect "$dev: VMCALL reaches the launcher" /tmp/p.out "hypercall 1: rbx = 0xcafe" "KVM_EXIT_HYPERCALL"
	else
		if grep -q "hypercall 1" /tmp/p.out; then not_ok "$dev: VMCALL answered by KVM"; else ok "$dev: VMCALL answered by KVM (no exit)"; fi
	fi
	rvmx-run --device $dev --mode prot32 /bin/hello_elf.elf > /tmp/e.out 2>&1; echo "status $?" >> /tmp/e.out
	expect "$dev: ELF guest loaded at its physical address" /tmp/e.out "Hello from an ELF guest at 1 MiB!" "status 0"
	rvmx-run --device $dev --mode long /bin/long64.bin > /tmp/l.out 2>&1; echo "status $?" >> /tmp/l.out
	expect "$dev: long mode, guest kernel drops to ring 3 and takes a system call" /tmp/l.out \
		"guest kernel: ring 0, long mode; dropping to ring 3" \
		"guest kernel: system call from ring 3: hello from guest user mode (ring 3)" \
		"guest kernel: user exited; bye" "status 0"
	rvmx-run --device $dev --mode long --vcpus 4 /bin/smp64.bin > /tmp/s.out 2>&1; echo "status $?" >> /tmp/s.out
	expect "$dev: SMP guest, 4 vCPUs x 100,000 LOCK XADD" /tmp/s.out \
		"smp64: all vCPUs done; counter = 400000" "each vCPU knew its number from CPUID" "status 0"
}

echo "TAP version 13"
echo "1..23"
insmod $MODDIR/rvmx.ko
samples /dev/rvmx
expect "exit summary shows the exits by reason" /tmp/l.out "KVM_EXIT_IO (out)" "VM exits in all (rvmx)"
# --trace: each exit to userspace with its VMX exit decoded, and the
# exits the kernel handled in between.
rvmx-run --trace --mode real /bin/hello16.bin > /tmp/tr.out 2>&1
expect "--trace: each exit to userspace with its VMX exit, and the in-kernel exits between" /tmp/tr.out \
	"KVM_EXIT IoOut: VMX exit 30 (I/O instruction): OUT port 0x3f8, 1 byte(s) at RIP" "in the kernel: EPT violation x"
# --stats: the exits by VMX reason, from the vCPU's statistics file.
rvmx-run --stats --mode prot32 /bin/prot32.bin > /tmp/st.out 2>&1
expect "--stats: the exits by VMX exit reason from KVM_GET_STATS_FD" /tmp/st.out \
	"VM exits from the statistics files (KVM_GET_STATS_FD) rvmx-" "VMX exit reason" "CPUID" "I/O instruction" "EPT violation" "VMCALL"
rvmx-run /nonexistent > /tmp/e1 2>&1; rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l < /tmp/e1)" -eq 1 ] && ! grep -q panicked /tmp/e1; then ok "missing guest file: one-line error"; else not_ok "missing guest file: one-line error" "rc=$rc $(cat /tmp/e1)"; fi
rvmx-run --mode bogus /bin/hello16.bin > /tmp/e2 2>&1; rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l < /tmp/e2)" -eq 1 ]; then ok "bad option: one-line error"; else not_ok "bad option: one-line error" "rc=$rc $(cat /tmp/e2)"; fi
rvmx-run --vcpus 0 /bin/hello16.bin > /tmp/e5 2>&1; rc=$?
if [ $rc -eq 2 ] && [ "$(wc -l < /tmp/e5)" -eq 1 ]; then ok "--vcpus 0: one-line error"; else not_ok "--vcpus 0: one-line error" "rc=$rc $(cat /tmp/e5)"; fi
: > /tmp/empty
rvmx-run /tmp/empty > /tmp/e3 2>&1; rc=$?
if [ $rc -eq 2 ] && ! grep -q panicked /tmp/e3; then ok "empty guest file: error, no panic"; else not_ok "empty guest file: error, no panic" "rc=$rc $(cat /tmp/e3)"; fi
printf '\177ELF\002\001' > /tmp/bad.elf; head -c 100 /dev/zero >> /tmp/bad.elf
rvmx-run /tmp/bad.elf > /tmp/e4 2>&1; rc=$?
if ! grep -q panicked /tmp/e4; then ok "malformed ELF: no panic (exit $rc)"; else not_ok "malformed ELF: no panic" "$(cat /tmp/e4)"; fi
if rmmod rvmx; then ok "rvmx unloads after the launcher runs"; else not_ok "rvmx unloads after the launcher runs"; fi
# The software L1D flush (for CPUs affected by L1TF without IA32_FLUSH_CMD;
# Bochs' CPU is not affected, so the module parameter forces it): the log
# says so and the 4-vCPU guest runs with a flush before every entry.
insmod $MODDIR/rvmx.ko l1d_flush=software
rvmx-run --mode long --vcpus 4 /bin/smp64.bin > /tmp/s.out 2>&1; echo "status $?" >> /tmp/s.out
if dmesg | grep -q "L1D flush yes (by software" && grep -q "counter = 400000" /tmp/s.out && grep -q "status 0" /tmp/s.out && rmmod rvmx; then
	ok "l1d_flush=software: the SMP guest runs with the software L1D flush before every entry"
else
	not_ok "l1d_flush=software: the SMP guest runs with the software L1D flush before every entry" "$(dmesg | grep 'L1D flush'; tail -3 /tmp/s.out)"
	rmmod rvmx 2>/dev/null
fi
modprobe kvm_intel
samples /dev/kvm
# --stats on KVM: KVM's named exit counters (it has no per-reason ones).
rvmx-run --device /dev/kvm --stats --mode prot32 /bin/prot32.bin > /tmp/stk.out 2>&1
expect "/dev/kvm: --stats shows KVM's exit counters" /tmp/stk.out "VM exits from the statistics files (KVM_GET_STATS_FD) kvm-" "io_exits" "halt_exits"
rmmod kvm_intel kvm
[ $fails -eq 0 ]
