// SPDX-License-Identifier: GPL-2.0
/*
 * kglue/trace.c - defines rvmx's tracepoints (kglue/trace.h) and gives the
 * Rust side (trace.rs) a function to fire each, and each one's on/off
 * count. 6.12's Rust has no tracepoint or jump-label support, so Rust
 * reads the count (what static_key_enabled() reads) and calls in only
 * when the event is on: off, an event costs one load and a branch.
 */
#define CREATE_TRACE_POINTS
#include <kglue/trace.h>

#include "kglue.h"

#ifdef CONFIG_TRACEPOINTS
const atomic_t *const rvmx_glue_trace_keys[RVMX_TRACE_EVENTS] = {
	[RVMX_TRACE_ENTRY] = &__tracepoint_rvmx_entry.key.enabled,
	[RVMX_TRACE_EXIT] = &__tracepoint_rvmx_exit.key.enabled,
	[RVMX_TRACE_USERSPACE_EXIT] = &__tracepoint_rvmx_userspace_exit.key.enabled,
	[RVMX_TRACE_INJECT] = &__tracepoint_rvmx_inject.key.enabled,
};
#else
/* A kernel without tracepoints: every event is off for good. */
static const atomic_t rvmx_trace_never = ATOMIC_INIT(0);
const atomic_t *const rvmx_glue_trace_keys[RVMX_TRACE_EVENTS] = {
	[0 ... RVMX_TRACE_EVENTS - 1] = &rvmx_trace_never,
};
#endif

void rvmx_glue_trace_entry(u32 vcpu, u64 rip, bool launch)
{
	trace_rvmx_entry(vcpu, rip, launch);
}

void rvmx_glue_trace_exit(u32 vcpu, u32 reason, u64 qualification, u64 rip,
			  u64 gpa, u32 intr_info)
{
	trace_rvmx_exit(vcpu, reason, qualification, rip, gpa, intr_info);
}

void rvmx_glue_trace_userspace_exit(u32 vcpu, u32 reason, int err)
{
	trace_rvmx_userspace_exit(vcpu, reason, err);
}

void rvmx_glue_trace_inject(u32 vcpu, u8 vector, u8 type, bool has_error_code,
			    u32 error_code)
{
	trace_rvmx_inject(vcpu, vector, type, has_error_code, error_code);
}
