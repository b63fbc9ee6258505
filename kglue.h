/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kglue.h - the interface between kglue.c and the Rust crate.
 *
 * rvmx_glue_*: implemented in kglue.c, called from Rust (declared again in
 * the Rust file that uses each, next to its safe wrapper).
 * rvmx_* without "glue": implemented in Rust (#[no_mangle]), called from C.
 */
#ifndef RVMX_KGLUE_H
#define RVMX_KGLUE_H

#include <linux/types.h>

struct file;
struct page;

/* Rust → C (kglue.c). */
int rvmx_glue_misc_register(void);
void rvmx_glue_misc_deregister(void);
unsigned long rvmx_glue_cr4_read_shadow(void);
unsigned long rvmx_glue_cr4_read_raw(void);
void rvmx_glue_cr4_set_vmxe(void);
void rvmx_glue_cr4_clear_vmxe(void);
unsigned int rvmx_glue_nr_cpu_ids(void);
unsigned int rvmx_glue_raw_cpu_id(void);
u64 rvmx_glue_page_to_phys(struct page *page);
int rvmx_glue_cpuhp_setup(void);
void rvmx_glue_cpuhp_remove(int state);
void rvmx_glue_on_each_cpu(void (*fn)(void *));
bool rvmx_glue_kvm_loaded(void);
int rvmx_glue_guards_register(void);
void rvmx_glue_guards_unregister(void);

/* C → Rust (dev.rs, vmxon.rs). */
long rvmx_dev_ioctl(struct file *filp, unsigned int cmd, unsigned long arg);
int rvmx_cpu_online(unsigned int cpu);
int rvmx_cpu_offline(unsigned int cpu);
void rvmx_reboot(void);
void rvmx_emergency_vmxoff(void);

#endif /* RVMX_KGLUE_H */
