/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kglue/kglue.h - the interface between the C files of kglue/ and the Rust crate.
 *
 * rvmx_glue_*: implemented in kglue/ (files.c, cpu.c, run.c, memory.c,
 * vmcs.c, trace.c), called from Rust through the declarations bindgen generates
 * from this header (kglue/mod.rs; Kbuild has the rule). Each Rust file
 * wraps the ones it uses in a safe API.
 * rvmx_* without "glue": implemented in Rust (#[no_mangle]), called from C.
 */
#ifndef RVMX_KGLUE_H
#define RVMX_KGLUE_H

#include <linux/types.h>

struct file;
struct page;

/* Rust → C (the .c files of kglue/). */
int rvmx_glue_misc_register(void);
void rvmx_glue_misc_deregister(void);
unsigned long rvmx_glue_cr4_read_shadow(void);
unsigned long rvmx_glue_cr4_read_raw(void);
void rvmx_glue_cr4_set_vmxe(void);
void rvmx_glue_cr4_clear_vmxe(void);
unsigned int rvmx_glue_nr_cpu_ids(void);
unsigned int rvmx_glue_raw_cpu_id(void);
bool rvmx_glue_log_ratelimit(void);
u64 rvmx_glue_page_to_phys(struct page *page);
int rvmx_glue_cpuhp_setup(void);
void rvmx_glue_cpuhp_remove(int state);
void rvmx_glue_on_each_cpu(void (*fn)(void *), void *info);
void rvmx_glue_kick_cpus(bool (*cond)(int cpu, void *info), void *info);
bool rvmx_glue_kvm_loaded(void);
int rvmx_glue_guards_register(void);
void rvmx_glue_guards_unregister(void);

void *rvmx_glue_alloc_zeroed_page(void);
void rvmx_glue_free_page(void *addr);
u64 rvmx_glue_virt_to_phys(void *addr);
void *rvmx_glue_phys_to_virt(u64 pa);
struct page *rvmx_glue_virt_to_page(void *addr);
void rvmx_glue_preempt_disable(void);
void rvmx_glue_preempt_enable(void);
void rvmx_glue_irq_disable(void);
void rvmx_glue_irq_enable(void);
bool rvmx_glue_need_resched(void);
void rvmx_glue_cond_resched(void);
bool rvmx_glue_softirq_pending(void);
void rvmx_glue_fpu_begin(void);
void rvmx_glue_fpu_end(void);
void rvmx_glue_restore_host_descriptor_limits(void);
struct mm_struct;
struct mm_struct *rvmx_glue_mm_grab_current(void);
bool rvmx_glue_mm_is_current(struct mm_struct *mm);
void rvmx_glue_mm_drop(struct mm_struct *mm);
bool rvmx_glue_access_ok(u64 uaddr, u64 size);
int rvmx_glue_get_user_page(u64 uaddr, bool write, struct page **page);
void rvmx_glue_release_page(struct page *page, bool dirty);
void rvmx_glue_set_pfn_dirty(u64 hpa);
struct rvmx_slot_notifier;
struct mmu_interval_notifier;
struct rvmx_slot_notifier *rvmx_glue_slot_notifier_new(const void *vm,
						       u64 start, u64 length,
						       int *err);
void rvmx_glue_slot_notifier_free(struct rvmx_slot_notifier *n);
unsigned long rvmx_glue_slot_notifier_read_begin(struct rvmx_slot_notifier *n);
bool rvmx_glue_slot_notifier_read_retry(struct rvmx_slot_notifier *n,
					unsigned long seq);
void rvmx_glue_mmu_interval_set_seq(struct mmu_interval_notifier *mni,
				    unsigned long cur_seq);
void rvmx_glue_restore_host_breakpoints(void);
bool rvmx_glue_split_lock_detect(void);
bool rvmx_glue_handle_guest_split_lock(unsigned long ip);
void rvmx_glue_machine_check(void);
int rvmx_glue_l1d_flush_mode(void);
int rvmx_glue_l1d_flush_alloc(void);
void rvmx_glue_l1d_flush_free(void);
void rvmx_glue_l1d_flush_sw(void);
void rvmx_glue_ibpb_on_vcpu_switch(u64 uid);
int rvmx_glue_exit_mitigations(void);
/* MSRs restored on the return to user mode (kglue/run.c). */
int rvmx_glue_uret_setup(const u32 *msrs, unsigned int count);
void rvmx_glue_uret_cpu_online(void);
void rvmx_glue_uret_drop(void);
int rvmx_glue_uret_set(unsigned int slot, u64 value);
int rvmx_glue_uret_load(const u64 *values, unsigned int count);
void rvmx_glue_uret_section_end(void);

/* Which VMCSs each CPU holds active (kglue/vmcs.c). */
struct rvmx_active_vmcs;
#define RVMX_GLUE_VMCS_ARRIVED 1
void rvmx_glue_active_vmcs_init(void);
struct rvmx_active_vmcs *rvmx_glue_active_vmcs_new(u64 pa);
void rvmx_glue_active_vmcs_free(struct rvmx_active_vmcs *a);
int rvmx_glue_active_vmcs_load(struct rvmx_active_vmcs *a);
void rvmx_glue_active_vmcs_unload(struct rvmx_active_vmcs *a);
bool rvmx_glue_active_vmcs_launched(const struct rvmx_active_vmcs *a);
void rvmx_glue_active_vmcs_set_launched(struct rvmx_active_vmcs *a);
void rvmx_glue_vmclear_local(void);
void rvmx_glue_vmclear_local_emergency(void);

/* The VMM's segment state a VM exit does not keep (kglue/run.c). */
struct rvmx_host_segments {
	u16 fs, gs, ldt;
	u64 fs_base;
};
void rvmx_glue_save_host_segments(struct rvmx_host_segments *s);
void rvmx_glue_restore_host_segments(const struct rvmx_host_segments *s);
int rvmx_glue_cmpxchg_user(u64 uaddr, bool wide, u64 old, u64 new);
int rvmx_glue_vm_fd(void *vm);
int rvmx_glue_vcpu_fd(void *vcpu);
int rvmx_glue_vm_stats_fd(void *vm);
int rvmx_glue_vcpu_stats_fd(void *vcpu);
int rvmx_glue_current_tgid(void);
void rvmx_glue_sigmask_activate(const u64 *mask);
void rvmx_glue_sigmask_deactivate(void);
unsigned int rvmx_glue_num_online_cpus(void);

/* Tracepoints (kglue/trace.c), in the order of trace.rs's `Event`. */
enum rvmx_trace_event {
	RVMX_TRACE_ENTRY,
	RVMX_TRACE_EXIT,
	RVMX_TRACE_USERSPACE_EXIT,
	RVMX_TRACE_INJECT,
	RVMX_TRACE_EVENTS
};
extern const atomic_t *const rvmx_glue_trace_keys[RVMX_TRACE_EVENTS];
void rvmx_glue_trace_entry(u32 vcpu, u64 rip, bool launch);
void rvmx_glue_trace_exit(u32 vcpu, u32 reason, u64 qualification, u64 rip,
			  u64 gpa, u32 intr_info);
void rvmx_glue_trace_userspace_exit(u32 vcpu, u32 reason, int err);
void rvmx_glue_trace_inject(u32 vcpu, u8 vector, u8 type, bool has_error_code,
			    u32 error_code);

/*
 * C → Rust: the functions the C files call back (dev.rs, vmxon.rs, vm.rs,
 * vmcs/mod.rs). Each Rust definition is checked against its declaration
 * here when the module is built (kglue/mod.rs, `same_signature!`).
 */
struct mmu_interval_notifier;
int rvmx_vmclear(u64 pa);
int rvmx_vmptrld(u64 pa);
int rvmx_cpu_suspend(void);
void rvmx_cpu_resume(void);
void rvmx_slot_invalidate(const void *vm, struct mmu_interval_notifier *mni,
			  u64 start, u64 end, unsigned long cur_seq);
long rvmx_vm_ioctl(const void *vm, unsigned int cmd, unsigned long arg);
void rvmx_vm_release(const void *vm);
long rvmx_vcpu_ioctl(const void *vcpu, unsigned int cmd, unsigned long arg);
void rvmx_vcpu_release(const void *vcpu);
ssize_t rvmx_vm_stats_read(const void *vm, char __user *buf, size_t size, loff_t *pos);
void rvmx_vm_stats_release(const void *vm);
ssize_t rvmx_vcpu_stats_read(const void *vcpu, char __user *buf, size_t size, loff_t *pos);
void rvmx_vcpu_stats_release(const void *vcpu);
struct page *rvmx_vcpu_page(const void *vcpu, unsigned long index);
long rvmx_dev_ioctl(struct file *filp, unsigned int cmd, unsigned long arg);
int rvmx_cpu_online(unsigned int cpu);
int rvmx_cpu_offline(unsigned int cpu);
void rvmx_reboot(void);
void rvmx_emergency_vmxoff(void);

#endif /* RVMX_KGLUE_H */
