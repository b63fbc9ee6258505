// SPDX-License-Identifier: GPL-2.0

//! rvmx: a hypervisor for Intel VT-x, as a Linux kernel module in Rust.
//!
//! This is the crate root: module load (`init`) and unload (`Drop`). Load
//! probes the CPU's VMX capabilities, puts every CPU into VMX root
//! operation (vmxon.rs) and registers /dev/rvmx (dev.rs); unload undoes
//! those steps in reverse order, by dropping the fields of `Rvmx`.
//! Start reading at docs/tour.md.

mod addr;
mod caps;
mod dev;
mod ept;
mod exits;
mod gmem;
mod guards;
mod guest;
mod kglue;
mod hw;
mod kpage;
mod msrs;
mod stats;
mod trace;
mod uapi;
mod vcpu;
mod vm;
mod vmcs;
mod vmxon;
mod vpid;
mod walk;

use kernel::prelude::*;

module! {
    type: Rvmx,
    name: "rvmx",
    author: "The rvmx developers",
    description: "rvmx: a VT-x hypervisor with a KVM-compatible ioctl interface",
    license: "GPL",
}

/// The loaded module. Fields drop in declaration order, the reverse of
/// setup: the device goes first (no new users), then VMX root operation,
/// then the reboot/crash/module-load guards.
struct Rvmx {
    _dev: dev::RvmxDevice,
    _root: vmxon::VmxRoot,
    /// The software L1D flush's buffer, where that flush is used.
    _l1d: Option<hw::L1dFlushBuffer>,
    _guards: guards::Guards,
}

impl kernel::Module for Rvmx {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let caps = caps::VmxCaps::probe().map_err(|why| {
            match why {
                caps::Unsupported::NoVmx => pr_err!("this CPU has no VMX (CPUID.1:ECX.VMX is 0)\n"),
                caps::Unsupported::DisabledByFirmware => pr_err!(
                    "VMX is disabled by firmware (IA32_FEATURE_CONTROL locked without VMXON outside SMX)\n"
                ),
                caps::Unsupported::FeatureControlUnlocked => {
                    pr_err!("IA32_FEATURE_CONTROL is not locked: VMXON would fault\n")
                }
                caps::Unsupported::Missing(what) => pr_err!("this CPU's VMX lacks {}\n", what),
            }
            why.errno()
        })?;
        caps.log();
        let guards = guards::Guards::register()?;
        let l1d = match caps.l1d_flush {
            caps::L1dFlush::Software => Some(hw::L1dFlushBuffer::new()?),
            _ => None,
        };
        // Before any CPU comes online for rvmx (it reads the host's values).
        msrs::setup_deferred()?;
        let root = vmxon::VmxRoot::enable(caps)?;
        pr_info!("{} CPUs in VMX root operation\n", root.cpus_in_vmx());
        let dev = dev::RvmxDevice::register()?;
        Ok(Rvmx { _dev: dev, _root: root, _l1d: l1d, _guards: guards })
    }
}

impl Drop for Rvmx {
    fn drop(&mut self) {
        pr_info!("leaving VMX root operation and unloading\n");
    }
}

/// Fails the build unless the Rust definition `$def` of a function the C
/// files call back has exactly the signature kglue.h declares for it
/// (`$decl`, as bindgen generated it in kglue/): both become function pointers
/// whose argument and return types are inferred from each, and an array
/// holds only one type. `$arg` is a `_` per argument.
macro_rules! same_signature {
    ($decl:path = $def:path; $($arg:tt),*) => {
        let _ = [$decl as unsafe extern "C" fn($($arg),*) -> _, $def as unsafe extern "C" fn($($arg),*) -> _];
    };
}

/// Never called: it only has to type-check (see `same_signature!`).
#[allow(dead_code, clippy::fn_to_numeric_cast_any)]
fn callbacks_match_kglue_h() {
    same_signature!(kglue::rvmx_dev_ioctl = crate::dev::rvmx_dev_ioctl; _, _, _);
    same_signature!(kglue::rvmx_vm_ioctl = crate::dev::rvmx_vm_ioctl; _, _, _);
    same_signature!(kglue::rvmx_vm_release = crate::dev::rvmx_vm_release; _);
    same_signature!(kglue::rvmx_vcpu_ioctl = crate::dev::rvmx_vcpu_ioctl; _, _, _);
    same_signature!(kglue::rvmx_vcpu_release = crate::dev::rvmx_vcpu_release; _);
    same_signature!(kglue::rvmx_vm_stats_read = crate::dev::rvmx_vm_stats_read; _, _, _, _);
    same_signature!(kglue::rvmx_vm_stats_release = crate::dev::rvmx_vm_stats_release; _);
    same_signature!(kglue::rvmx_vcpu_stats_read = crate::dev::rvmx_vcpu_stats_read; _, _, _, _);
    same_signature!(kglue::rvmx_vcpu_stats_release = crate::dev::rvmx_vcpu_stats_release; _);
    same_signature!(kglue::rvmx_vcpu_page = crate::dev::rvmx_vcpu_page; _, _);
    same_signature!(kglue::rvmx_cpu_online = crate::vmxon::rvmx_cpu_online; _);
    same_signature!(kglue::rvmx_cpu_offline = crate::vmxon::rvmx_cpu_offline; _);
    same_signature!(kglue::rvmx_cpu_suspend = crate::vmxon::rvmx_cpu_suspend;);
    same_signature!(kglue::rvmx_cpu_resume = crate::vmxon::rvmx_cpu_resume;);
    same_signature!(kglue::rvmx_reboot = crate::vmxon::rvmx_reboot;);
    same_signature!(kglue::rvmx_emergency_vmxoff = crate::vmxon::rvmx_emergency_vmxoff;);
    same_signature!(kglue::rvmx_slot_invalidate = crate::vm::rvmx_slot_invalidate; _, _, _, _, _);
    same_signature!(kglue::rvmx_vmclear = crate::vmcs::rvmx_vmclear; _);
    same_signature!(kglue::rvmx_vmptrld = crate::vmcs::rvmx_vmptrld; _);
}
