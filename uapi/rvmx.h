/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * uapi/rvmx.h - the ABI of /dev/rvmx.
 *
 * rvmx speaks KVM's ABI (include/uapi/linux/kvm.h) for every call it
 * implements: same ioctl numbers, same structures. This header is the one
 * source of truth for both sides: the module's Rust definitions are
 * generated from it by bindgen (uapi/mod.rs), and userspace includes it (or
 * simply <linux/kvm.h>) to talk to rvmx.
 *
 * Implemented (KVM names):
 *   /dev/rvmx: KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_GET_VCPU_MMAP_SIZE,
 *              KVM_CHECK_EXTENSION, KVM_GET_SUPPORTED_CPUID,
 *              KVM_GET_MSR_INDEX_LIST
 *   VM fd:     KVM_SET_USER_MEMORY_REGION (KVM_MEM_READONLY,
 *              KVM_MEM_LOG_DIRTY_PAGES), KVM_GET_DIRTY_LOG, KVM_CREATE_VCPU,
 *              KVM_CHECK_EXTENSION, KVM_SET_TSS_ADDR,
 *              KVM_SET_IDENTITY_MAP_ADDR, KVM_GET_STATS_FD,
 *              KVM_SET_GSI_ROUTING (EINVAL: no in-kernel irqchip, as KVM)
 *   vCPU fd:   KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS,
 *              KVM_SET_SREGS, KVM_INTERRUPT, KVM_GET_MSRS, KVM_SET_MSRS,
 *              KVM_SET_CPUID2, KVM_GET_CPUID2, KVM_SET_SIGNAL_MASK,
 *              KVM_GET_FPU, KVM_SET_FPU, KVM_GET_XSAVE, KVM_SET_XSAVE,
 *              KVM_GET_XCRS, KVM_SET_XCRS, KVM_GET_VCPU_EVENTS,
 *              KVM_SET_VCPU_EVENTS, KVM_NMI, KVM_GET_STATS_FD,
 *              KVM_GET_MP_STATE, KVM_SET_MP_STATE (RUNNABLE only), mmap
 * Anything else answers ENOTTY (on /dev/rvmx) or EINVAL (VM and vCPU fds,
 * as KVM does for numbers it does not know).
 */
#ifndef _UAPI_RVMX_H
#define _UAPI_RVMX_H

#include <linux/kvm.h>
#include <linux/types.h>

/*
 * rvmx's own addition: the vCPU mmap has, after the pages KVM defines
 * (kvm_run at page 0, port-I/O data at KVM_PIO_PAGE_OFFSET, the coalesced-
 * MMIO ring's place at KVM_COALESCED_MMIO_PAGE_OFFSET, which rvmx leaves
 * empty), one page with what the CPU reported at the last VM exit.
 */
#define RVMX_EXIT_INFO_PAGE_OFFSET	3
#define RVMX_VCPU_MMAP_PAGES		4

/*
 * The raw VM-exit information of the last VM exit that ended a KVM_RUN
 * (or of the failed VM entry that did), as the VMCS held it (Intel SDM
 * Vol. 3C, "VM-Exit Information Fields"). Exits rvmx handles in the
 * kernel and then re-enters the guest do not rewrite it, to keep the exit
 * path short: they are counted in `exits`, and by reason (with their
 * time) in the vCPU's statistics file (KVM_GET_STATS_FD). For learners:
 * compare kvm_run.exit_reason (what rvmx made of the exit) with
 * basic_reason (why the CPU left the guest).
 */
struct rvmx_exit_info {
	__u32 basic_reason;	/* exit reason bits 15:0 (SDM Appendix C) */
	__u32 full_reason;	/* the whole field: bit 31 = VM-entry failure */
	__u64 qualification;	/* exit qualification */
	__u64 guest_physical_address;	/* EPT violations and misconfigs */
	__u64 guest_linear_address;	/* where the CPU reports one */
	__u32 instruction_len;	/* VM-exit instruction length */
	__u32 instruction_info;	/* VM-exit instruction information */
	__u32 intr_info;	/* VM-exit interruption information */
	__u32 intr_error_code;
	__u64 guest_rip;	/* RIP of the instruction that caused the exit */
	__u64 exits;		/* VM exits of this vCPU so far */
	/*
	 * After a failed VM entry (full_reason bit 31, or VMLAUNCH/VMRESUME
	 * failing with vm_instruction_error 7 or 8): the first rule of the
	 * SDM's entry checks the VMCS breaks, as rvmx's checker found it
	 * (vmcs/checks.rs; 0: none found), the segment register it concerns
	 * (1-8: ES CS SS DS FS GS LDTR TR; 0: none) and the field's value.
	 */
	__u32 vm_instruction_error;
	__u16 entry_check;
	__u8 entry_segment;
	__u8 pad;
	__u64 entry_value;
};

/*
 * rvmx's addition to KVM_EXIT_FAIL_ENTRY: kvm_run's exit union holds, as
 * in KVM, struct { __u64 hardware_entry_failure_reason; __u32 cpu; }
 * fail_entry, and rvmx fills the bytes after it with what its checker
 * found (the same three values as in struct rvmx_exit_info). A KVM client
 * reads fail_entry as usual and never sees the rest.
 */
struct rvmx_fail_entry {
	__u64 hardware_entry_failure_reason;	/* as KVM */
	__u32 cpu;				/* as KVM */
	__u16 check;
	__u8 segment;
	__u8 pad;
	__u64 value;
};

#endif /* _UAPI_RVMX_H */
