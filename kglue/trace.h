/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kglue/trace.h - rvmx's tracepoints, with the kernel's TRACE_EVENT
 * machinery: /sys/kernel/tracing/events/rvmx/, `perf record -e 'rvmx:*'`,
 * trace-cmd. One event for each step of the VMX cycle a learner follows:
 *
 *   rvmx_entry           VMLAUNCH/VMRESUME: the CPU enters VMX non-root
 *   rvmx_inject          the event (interrupt, NMI, exception) that entry
 *                        delivers to the guest
 *   rvmx_exit            a VM exit: back in root operation, and why
 *   rvmx_userspace_exit  KVM_RUN returns: the VMM gets kvm_run.exit_reason
 *
 * The Rust side (trace.rs) calls the rvmx_glue_trace_* functions of
 * kglue/trace.c only when an event is on.
 */
#undef TRACE_SYSTEM
#define TRACE_SYSTEM rvmx

#if !defined(RVMX_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define RVMX_TRACE_H

#include <linux/tracepoint.h>
#include <asm/vmx.h>

/* kvm_run.exit_reason names (include/uapi/linux/kvm.h), as KVM prints them. */
#define RVMX_KVM_EXIT_NAMES						\
	{ 0, "KVM_EXIT_UNKNOWN" }, { 1, "KVM_EXIT_EXCEPTION" },		\
	{ 2, "KVM_EXIT_IO" }, { 3, "KVM_EXIT_HYPERCALL" },		\
	{ 4, "KVM_EXIT_DEBUG" }, { 5, "KVM_EXIT_HLT" },			\
	{ 6, "KVM_EXIT_MMIO" }, { 7, "KVM_EXIT_IRQ_WINDOW_OPEN" },	\
	{ 8, "KVM_EXIT_SHUTDOWN" }, { 9, "KVM_EXIT_FAIL_ENTRY" },	\
	{ 10, "KVM_EXIT_INTR" }, { 17, "KVM_EXIT_INTERNAL_ERROR" }

/* Interruption-information types (SDM Vol. 3C 25.8.3), vmcs/intr.rs. */
#define RVMX_EVENT_TYPES						\
	{ 0, "external interrupt" }, { 2, "NMI" },			\
	{ 3, "hardware exception" }, { 4, "software interrupt" },	\
	{ 5, "privileged software exception" },				\
	{ 6, "software exception" }, { 7, "other event" }

TRACE_EVENT(rvmx_entry,
	TP_PROTO(u32 vcpu, u64 rip, bool launch),
	TP_ARGS(vcpu, rip, launch),
	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u64, rip)
		__field(bool, launch)
	),
	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->rip = rip;
		__entry->launch = launch;
	),
	TP_printk("vcpu %u %s rip 0x%llx", __entry->vcpu,
		  __entry->launch ? "VMLAUNCH" : "VMRESUME", __entry->rip)
);

/* `reason` is the full exit reason: bit 31 set for a failed VM entry. */
TRACE_EVENT(rvmx_exit,
	TP_PROTO(u32 vcpu, u32 reason, u64 qualification, u64 rip, u64 gpa,
		 u32 intr_info),
	TP_ARGS(vcpu, reason, qualification, rip, gpa, intr_info),
	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u32, reason)
		__field(u64, qualification)
		__field(u64, rip)
		__field(u64, gpa)
		__field(u32, intr_info)
	),
	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->reason = reason;
		__entry->qualification = qualification;
		__entry->rip = rip;
		__entry->gpa = gpa;
		__entry->intr_info = intr_info;
	),
	TP_printk("vcpu %u reason %s (%u)%s qualification 0x%llx rip 0x%llx gpa 0x%llx intr_info 0x%x",
		  __entry->vcpu,
		  __print_symbolic(__entry->reason & 0xffff, VMX_EXIT_REASONS),
		  __entry->reason & 0xffff,
		  __entry->reason & VMX_EXIT_REASONS_FAILED_VMENTRY ?
			" failed VM entry" : "",
		  __entry->qualification, __entry->rip, __entry->gpa,
		  __entry->intr_info)
);

TRACE_EVENT(rvmx_userspace_exit,
	TP_PROTO(u32 vcpu, u32 reason, int err),
	TP_ARGS(vcpu, reason, err),
	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u32, reason)
		__field(int, err)
	),
	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->reason = reason;
		__entry->err = err;
	),
	TP_printk("vcpu %u reason %s (%u) errno %d", __entry->vcpu,
		  __print_symbolic(__entry->reason, RVMX_KVM_EXIT_NAMES),
		  __entry->reason, __entry->err)
);

TRACE_EVENT(rvmx_inject,
	TP_PROTO(u32 vcpu, u8 vector, u8 type, bool has_error_code,
		 u32 error_code),
	TP_ARGS(vcpu, vector, type, has_error_code, error_code),
	TP_STRUCT__entry(
		__field(u32, vcpu)
		__field(u8, vector)
		__field(u8, type)
		__field(bool, has_error_code)
		__field(u32, error_code)
	),
	TP_fast_assign(
		__entry->vcpu = vcpu;
		__entry->vector = vector;
		__entry->type = type;
		__entry->has_error_code = has_error_code;
		__entry->error_code = error_code;
	),
	TP_printk("vcpu %u vector %u type %s%s 0x%x", __entry->vcpu,
		  __entry->vector,
		  __print_symbolic(__entry->type, RVMX_EVENT_TYPES),
		  __entry->has_error_code ? " error code" : " no error code",
		  __entry->error_code)
);

#endif /* RVMX_TRACE_H */

/* Out of the kernel tree: found as <kglue/trace.h> (Kbuild adds -I$(src)). */
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH kglue
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE trace
#include <trace/define_trace.h>
