#!/bin/sh
# tests/guest/foundation.sh - runs inside the emulated VT-x machine (Bochs,
# 2 CPUs) with no hypervisor module loaded. Checks issue 2's foundation:
# VMXON/VMXOFF on every CPU, repeated load/unload, CPU hotplug, the device,
# and the refusals when another hypervisor holds VMX. Prints TAP.
#
# "VMX state" is read from outside rvmx by vmxprobe.ko (tests/kmod): for each
# CPU, CR4.VMXE and whether VMPTRST succeeds (it does only in VMX operation).

MODDIR=/lib/modules/$(uname -r)/extra
NCPU=$(grep -c ^processor /proc/cpuinfo)
n=0
fails=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); fails=$((fails + 1)); echo "not ok $n - $1"; [ -n "$2" ] && echo "# $2"; }
check() { name=$1; shift; if "$@"; then ok "$name"; else not_ok "$name" "command failed: $*"; fi; }

# vmx_state: prints "CPU VMXE ROOT" for each online CPU, one per line, as
# seen by vmxprobe.ko. (Called in $(...), a subshell: the probe's tag counter
# lives in a file. busybox insmod retries a failed finit_module with
# init_module, so the probe may report twice: keep one line per CPU.)
echo 0 > /tmp/probe_seq
vmx_state() {
	seq=$(($(cat /tmp/probe_seq) + 1)); echo $seq > /tmp/probe_seq
	insmod $MODDIR/vmxprobe.ko tag=p$seq 2>/dev/null
	dmesg | grep "vmxprobe p$seq:" | sed 's/.*cpu\([0-9]*\) cr4.vmxe=\([01]\) vmx_root=\([01]\)\(.*\)/\1 \2 \3\4/' | sort -u
}
# all_cpus_in STATE: every online CPU reports "STATE" ("1 1" or "0 0").
all_cpus_in() {
	want=$1
	state=$(vmx_state)
	lines=$(echo "$state" | grep -c .)
	good=$(echo "$state" | grep -c "^[0-9]* $want\$")
	[ "$lines" -eq "$(cat /sys/devices/system/cpu/online | awk -F- '{print ($2==""?1:$2-$1+1)}')" ] && [ "$good" -eq "$lines" ] || {
		echo "# vmx state (cpu vmxe root): $(echo $state)"
		return 1
	}
}
load() { insmod $MODDIR/rvmx.ko; }
unload() { rmmod rvmx; }

echo "TAP version 13"
echo "1..18"

# 1-8: load, VMX root on every CPU, the device, unload.
check "insmod rvmx" load
if dmesg | grep -q "rvmx: VMX revision"; then ok "load logs what the CPU offers"; else not_ok "load logs what the CPU offers"; fi
if dmesg | grep -q "rvmx: $NCPU CPUs in VMX root operation"; then ok "rvmx reports all $NCPU CPUs in VMX root"; else not_ok "rvmx reports all $NCPU CPUs in VMX root" "$(dmesg | grep rvmx: | tail -3)"; fi
check "every CPU has CR4.VMXE and is in VMX operation (vmxprobe)" all_cpus_in "1 1"
dev_ioctl /dev/rvmx > /tmp/dev_ioctl.out; rc=$?
sed 's/^/    /' /tmp/dev_ioctl.out   # its subtests, indented as TAP subtests
check "/dev/rvmx node and system ioctls (dev_ioctl subtests)" test $rc = 0
check "rmmod rvmx" unload
check "after unload no CPU has CR4.VMXE or is in VMX operation" all_cpus_in "0 0"
check "/dev/rvmx is gone after unload" test ! -e /dev/rvmx

# 9: load/unload 20 times with the VMX state of every CPU checked each time.
i=0; bad=""
while [ $i -lt 20 ]; do
	i=$((i + 1))
	load || { bad="insmod #$i failed"; break; }
	all_cpus_in "1 1" || { bad="after insmod #$i not in VMX root"; unload; break; }
	unload || { bad="rmmod #$i failed"; break; }
	all_cpus_in "0 0" || { bad="after rmmod #$i still in VMX"; break; }
done
if [ -z "$bad" ]; then ok "load/unload 20 times, VMX on/off on every CPU each time"; else not_ok "load/unload 20 times" "$bad"; fi

# 10-11: CPU hotplug while loaded: the CPU leaves VMX going offline and
# enters it again coming back online.
if [ "$NCPU" -ge 2 ] && [ -w /sys/devices/system/cpu/cpu1/online ]; then
	load
	echo 0 > /sys/devices/system/cpu/cpu1/online
	state=$(vmx_state)
	if [ "$(cat /sys/devices/system/cpu/cpu1/online)" = 0 ] && echo "$state" | grep -q "^0 1 1" && ! echo "$state" | grep -q "^1 "; then
		ok "CPU1 offline while loaded: CPU0 stays in VMX root"
	else
		not_ok "CPU1 offline while loaded: CPU0 stays in VMX root" "$(echo $state)"
	fi
	echo 1 > /sys/devices/system/cpu/cpu1/online
	check "CPU1 back online: every CPU in VMX root again" all_cpus_in "1 1"
	unload
else
	ok "CPU1 offline while loaded # SKIP needs 2 hotpluggable CPUs"
	ok "CPU1 back online # SKIP needs 2 hotpluggable CPUs"
fi

# 12-13: kvm_intel first, then rvmx: rvmx refuses with EBUSY, naming kvm.
if modprobe kvm_intel 2>/dev/null; then
	out=$(insmod $MODDIR/rvmx.ko 2>&1); rc=$?
	if [ $rc -ne 0 ] && echo "$out" | grep -q "busy" && dmesg | grep -q "rvmx: VMX is in use by another hypervisor: kvm is loaded"; then
		ok "with kvm_intel loaded, insmod rvmx fails with EBUSY and names kvm"
	else
		not_ok "with kvm_intel loaded, insmod rvmx fails with EBUSY and names kvm" "rc=$rc $out"
		[ $rc -eq 0 ] && unload
	fi
	rmmod kvm_intel; rmmod kvm
	check "after kvm_intel is unloaded, rvmx loads" load
	unload
else
	not_ok "modprobe kvm_intel (reference hypervisor) works on this machine"
	not_ok "after kvm_intel is unloaded, rvmx loads"
fi

# 14-15: rvmx first, then kvm_intel: refused with EBUSY, rvmx keeps VMX.
load
out=$(modprobe kvm_intel 2>&1); rc=$?
if [ $rc -ne 0 ] && dmesg | grep -q "rvmx: refusing to load kvm" && ! grep -q "^kvm" /proc/modules; then
	ok "with rvmx loaded, modprobe kvm_intel is refused and leaves no kvm module"
else
	not_ok "with rvmx loaded, modprobe kvm_intel is refused and leaves no kvm module" "rc=$rc $out; $(grep ^kvm /proc/modules)"
	rmmod kvm_intel kvm 2>/dev/null
fi
check "rvmx still holds VMX on every CPU after the refused kvm_intel" all_cpus_in "1 1"
unload

# 16: another hypervisor (simulated by vmxprobe hold_vmxe=1) set CR4.VMXE:
# rvmx sees it in the kernel's CR4 shadow and refuses with EBUSY.
insmod $MODDIR/vmxprobe.ko hold_vmxe=1
out=$(insmod $MODDIR/rvmx.ko 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q "busy" && dmesg | grep -q "CR4.VMXE is already set"; then
	ok "CR4.VMXE already set by another module: insmod rvmx fails with EBUSY"
else
	not_ok "CR4.VMXE already set by another module: insmod rvmx fails with EBUSY" "rc=$rc $out"
	[ $rc -eq 0 ] && unload
fi
rmmod vmxprobe

# 17: and loads cleanly once the other one is gone, leaving no CPU behind.
if load && all_cpus_in "1 1" && unload && all_cpus_in "0 0"; then
	ok "rvmx loads and unloads cleanly after the refusal"
else
	not_ok "rvmx loads and unloads cleanly after the refusal"
fi

# 18: suspend to RAM. /sys/power/pm_test=core runs the whole suspend path
# up to the platform's sleep (CPU1 goes offline through hotplug, then the
# syscore callbacks run on CPU0) and resumes at once: rvmx must take CPU0
# out of VMX and put it back, and every CPU must be in VMX root afterwards.
# (The firmware's reset of CR4 and VMX on a real S3 is not emulated.)
load
if [ -w /sys/power/pm_test ] && grep -qw mem /sys/power/state; then
	echo core > /sys/power/pm_test
	echo mem > /sys/power/state; rc=$?
	echo none > /sys/power/pm_test
	if [ $rc -eq 0 ] && dmesg | grep -q "rvmx: CPU0: leaving VMX operation for suspend" &&
	   dmesg | grep -q "rvmx: CPU0: back in VMX operation after resume" && all_cpus_in "1 1"; then
		ok "suspend to RAM (pm_test=core): CPU0 leaves VMX and re-enters it, every CPU in VMX root after"
	else
		not_ok "suspend to RAM (pm_test=core): CPU0 leaves VMX and re-enters it, every CPU in VMX root after" "rc=$rc; $(dmesg | grep -i 'rvmx\|PM:' | tail -6 | tr '\n' ' ')"
	fi
else
	not_ok "suspend to RAM (pm_test=core)" "no /sys/power/pm_test or no 'mem' state: $(cat /sys/power/state 2>&1)"
fi
unload

[ $fails -eq 0 ]
