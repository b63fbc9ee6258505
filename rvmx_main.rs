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
