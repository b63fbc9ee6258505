// SPDX-License-Identifier: GPL-2.0

//! The guest's model-specific registers: which MSRs a guest has, where each
//! one's value lives, the MSR bitmap that lets the guest use some of them
//! without a VM exit, and the rules for reading and writing them, shared by
//! KVM_GET_MSRS/KVM_SET_MSRS (the VMM) and the guest's own RDMSR/WRMSR
//! (exits/msr.rs). An MSR not listed here does not exist for the guest:
//! its RDMSR or WRMSR gets #GP(0), as on a CPU without it, and KVM_GET_MSRS
//! stops there. The host's MSRs are never written with a guest's value
//! except those below that rvmx writes into the CPU, and those only after the checks the CPU
//! itself would make (a bad value would fault in the host).
//!
//! Where each value lives:
//! - in the VMCS guest-state area, loaded by VM entry and saved by VM exit:
//!   EFER, PAT, SYSENTER_CS/ESP/EIP, FS and GS base (segment base fields);
//!   the TSC is the host's TSC plus the VMCS's TSC offset, and TSC_ADJUST
//!   is kept in `GuestMsrs` with KVM's rules (`set`): the guest's write of
//!   one moves the other, the VMM's writes do not;
//! - in `GuestMsrs`, written into the CPU by rvmx because VM entry and exit
//!   do not switch them:
//!   - KERNEL_GS_BASE, swapped around every guest section (vcpu/run.rs): the
//!     host's is the VMM's GS base, which the section's end must restore
//!     with the VMM's segments;
//!   - STAR, LSTAR, CSTAR, SFMASK, TSC_AUX (`DEFERRED`), which the host
//!     needs only on system-call entry and in user mode: a section writes
//!     the guest's values where the CPU holds others, and the host's come
//!     back on the next return to user mode (a user-return notifier,
//!     kglue/run.c), as in KVM. The guest reads them without an exit, but
//!     writes them through an exit (exits/msr.rs), so `GuestMsrs` always
//!     holds the values the CPU has during a section;
//! - only in `GuestMsrs` (emulated, no hardware effect): APIC_BASE (there is
//!   no local APIC), and those of emulated.rs: the MTRRs, the machine-check
//!   MSRs, KVM's first paravirtual clock MSRs, MISC_ENABLE, the microcode
//!   revision and the other model-specific MSRs an OS reads at boot.
//! - DEBUGCTL lives in the VMCS (VM entry loads it, VM exit saves it); rvmx
//!   lets the guest set none of its features (emulated.rs, `debugctl_write`).

pub(crate) mod bitmap;
pub(crate) mod emulated;

use crate::hw::msr::{self, Msr};
use crate::kglue::{
    rvmx_glue_uret_cpu_online, rvmx_glue_uret_drop, rvmx_glue_uret_load, rvmx_glue_uret_section_end,
    rvmx_glue_uret_set, rvmx_glue_uret_setup,
};
use crate::vmcs::{fields::*, Loaded};
use bitmap::{Access, MsrBitmap};
use emulated::{By, EmulatedMsrs};
use kernel::{error::to_result, prelude::*};

pub(crate) const IA32_TSC: u32 = 0x10;
pub(crate) const IA32_APIC_BASE: u32 = 0x1b;
pub(crate) const IA32_TSC_ADJUST: u32 = 0x3b;
pub(crate) const IA32_SYSENTER_CS: u32 = 0x174;
pub(crate) const IA32_SYSENTER_ESP: u32 = 0x175;
pub(crate) const IA32_SYSENTER_EIP: u32 = 0x176;
pub(crate) const IA32_DEBUGCTL: u32 = 0x1d9;
pub(crate) const IA32_PAT: u32 = 0x277;
pub(crate) const IA32_EFER: u32 = 0xc000_0080;
pub(crate) const IA32_STAR: u32 = 0xc000_0081;
pub(crate) const IA32_LSTAR: u32 = 0xc000_0082;
pub(crate) const IA32_CSTAR: u32 = 0xc000_0083;
pub(crate) const IA32_FMASK: u32 = 0xc000_0084;
pub(crate) const IA32_FS_BASE: u32 = 0xc000_0100;
pub(crate) const IA32_GS_BASE: u32 = 0xc000_0101;
pub(crate) const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub(crate) const IA32_TSC_AUX: u32 = 0xc000_0103;

/// The MSRs the guest reads and writes without an exit: the VMCS switches
/// them, or rvmx swaps them around each guest section (KERNEL_GS_BASE).
pub(crate) const PASSED: [u32; 6] =
    [IA32_FS_BASE, IA32_GS_BASE, IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, IA32_KERNEL_GS_BASE];

/// The MSRs whose guest values stay in the CPU after a guest section,
/// until the next return to user mode, in `GuestMsrs::deferred` order (the
/// slots of kglue/run.c). TSC_AUX is last: only on CPUs that have it.
pub(crate) const DEFERRED: [u32; 5] = [IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_TSC_AUX];

/// What KVM_GET_MSR_INDEX_LIST reports: the MSRs a VMM must save and
/// restore with KVM_GET_MSRS/KVM_SET_MSRS to migrate a vCPU. As in KVM,
/// the ones KVM_GET_SREGS already carries (EFER, APIC_BASE, and FS/GS base
/// in the segments) are not listed, though KVM_GET_MSRS reads them too.
pub(crate) const INDEX_LIST: [u32; 15] = [
    IA32_TSC, IA32_TSC_ADJUST, IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, emulated::IA32_MISC_ENABLE, IA32_PAT,
    IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_TSC_AUX,
    emulated::MSR_PLATFORM_INFO, emulated::MSR_MISC_FEATURES_ENABLES,
];

/// EFER bits a guest may set: SCE (SYSCALL), LME, LMA (which the CPU, not
/// the guest, sets), NXE.
const EFER_ALLOWED: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);
const EFER_LMA: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
/// APIC_BASE: BSP flag, x2APIC enable, global enable, and the base address.
const APIC_BASE_BSP: u64 = 1 << 8;

/// The guest MSR values that do not live in the VMCS.
pub(crate) struct GuestMsrs {
    /// The guest's values of `DEFERRED[..deferred_count]`.
    deferred: [u64; DEFERRED.len()],
    /// How many of `DEFERRED` this CPU has (TSC_AUX needs RDTSCP or RDPID).
    pub(crate) deferred_count: usize,
    /// The guest's KERNEL_GS_BASE while it does not run.
    kernel_gs_base: u64,
    pub(crate) apic_base: u64,
    /// IA32_TSC_ADJUST (CPUID 7.0:EBX bit 1, which KVM_GET_SUPPORTED_CPUID
    /// passes on): the sum of the guest's own TSC writes, as on a CPU.
    tsc_adjust: u64,
    /// Whether VM entry and exit switch PAT (optional controls); if not,
    /// the guest's PAT is only remembered here.
    pat_in_vmcs: bool,
    pat: u64,
    /// The software-only MSRs (1.4 KiB, so on the heap).
    emulated: KBox<EmulatedMsrs>,
}

// SAFETY: all zero bytes are a valid `EmulatedMsrs`: it holds only integers
// and arrays of integers.
unsafe impl kernel::init::Zeroable for EmulatedMsrs {}

/// Why a write was refused: the guest gets #GP(0), KVM_SET_MSRS stops.
pub(crate) struct Refused;

/// The MSRs that hold a linear address (FS/GS base, SYSENTER, the syscall
/// entry points) must hold a canonical one: 48-bit, since rvmx refuses
/// CR4.LA57 (stricter than a 5-level paging CPU needs, never looser).
fn canonical(v: u64) -> bool {
    crate::walk::canonical(crate::addr::Linear(v))
}

fn valid_pat(v: u64) -> bool {
    // Each byte is a memory type: 0 (UC), 1 (WC), 4 (WT), 5 (WP), 6 (WB), 7 (UC-).
    v.to_le_bytes().iter().all(|&t| matches!(t, 0 | 1 | 4 | 5 | 6 | 7))
}

/// How many of `DEFERRED` this CPU has: TSC_AUX needs RDTSCP or RDPID.
fn deferred_count() -> usize {
    let ext = crate::hw::cpuid(0x8000_0001, 0);
    let leaf7 = crate::hw::cpuid(7, 0);
    let tsc_aux = ext[3] & (1 << 27) != 0 || leaf7[2] & (1 << 22) != 0;
    if tsc_aux { DEFERRED.len() } else { DEFERRED.len() - 1 }
}

/// At module load, before any CPU comes online for rvmx: tells kglue/run.c
/// which MSRs it defers to the return to user mode.
pub(crate) fn setup_deferred() -> Result {
    // CAST: at most `DEFERRED.len()` (5).
    let n = deferred_count() as u32;
    // SAFETY: the glue copies `n` values from the array during the call.
    to_result(unsafe { rvmx_glue_uret_setup(DEFERRED.as_ptr(), n) })
}

/// This CPU comes online for rvmx (or back from suspend): kglue/run.c reads
/// the host's values of the deferred MSRs.
pub(crate) fn cpu_online() {
    // SAFETY: the MSRs exist (`deferred_count`); runs on the CPU concerned.
    unsafe { rvmx_glue_uret_cpu_online() };
}

/// This CPU goes offline, suspends or reboots, or rvmx unloads: the host's
/// values of the deferred MSRs go back now, and the user-return notifier
/// (which lives in this module's memory) is unregistered.
pub(crate) fn cpu_offline() {
    // SAFETY: writes back the values read by `cpu_online` on this CPU.
    unsafe { rvmx_glue_uret_drop() };
}

/// The end of a guest section: where the kernel has no user-return
/// notifiers, the host's deferred MSRs go back now.
///
/// # Safety
///
/// Preemption is off (the same CPU as the section's `load_deferred`).
pub(crate) unsafe fn section_end() {
    // SAFETY: per the function's contract.
    unsafe { rvmx_glue_uret_section_end() };
}

/// Fills the MSR bitmap (layout: bitmap.rs): which of the guest's MSR
/// accesses reach the CPU without an exit.
pub(crate) fn fill_bitmap(bitmap: &mut MsrBitmap, deferred_count: usize) {
    bitmap::intercept_all(bitmap);
    // State the CPU switches (VMCS) or rvmx swaps around each section: the
    // guest may use it freely; the CPU checks the values itself, as on
    // bare metal.
    for m in PASSED {
        bitmap::pass(bitmap, m, Access::Read);
        bitmap::pass(bitmap, m, Access::Write);
    }
    // The deferred MSRs: reads see the guest's value in the CPU; writes
    // exit, so that rvmx knows the value without reading it back.
    for &m in &DEFERRED[..deferred_count] {
        bitmap::pass(bitmap, m, Access::Read);
    }
}

impl GuestMsrs {
    /// The reset values (as KVM's kvm_vcpu_reset).
    pub(crate) fn new(vcpu_id: u32, pat_in_vmcs: bool) -> Result<Self> {
        // Built in place: no 1.4 KiB value on the kernel stack.
        let mut emulated = KBox::init(kernel::init::zeroed::<EmulatedMsrs>(), GFP_KERNEL_ACCOUNT)?;
        emulated.reset(crate::hw::cpuid(0x8000_0008, 0)[0] & 0xff);
        Ok(GuestMsrs {
            emulated,
            deferred: [0; DEFERRED.len()],
            deferred_count: deferred_count(),
            kernel_gs_base: 0,
            tsc_adjust: 0,
            apic_base: 0xfee0_0000 | (1 << 11) | if vcpu_id == 0 { APIC_BASE_BSP } else { 0 },
            pat_in_vmcs,
            pat: 0x0007_0406_0007_0406,
        })
    }

    /// Whether the guest turned CPUID faulting on (emulated.rs): CPUID at
    /// CPL > 0 is then #GP.
    pub(crate) fn cpuid_faulting(&self) -> bool {
        self.emulated.cpuid_faulting()
    }

    /// KVM_X86_SETUP_MCE (emulated.rs).
    pub(crate) fn setup_mce(&mut self, mcg_cap: u64) -> Result<(), Refused> {
        self.emulated.setup_mce(mcg_cap).map_err(|_| Refused)
    }

    fn deferred_slot(&self, index: u32) -> Option<usize> {
        DEFERRED[..self.deferred_count].iter().position(|&m| m == index)
    }

    /// Gives this CPU the guest's deferred MSRs (see `DEFERRED`), writing
    /// only those that differ from what it holds.
    ///
    /// # Safety
    ///
    /// Preemption must be off until the section ends (`section_end`).
    pub(crate) unsafe fn load_deferred(&self) -> Result {
        // CAST: at most 5. SAFETY: preemption is off (contract); the glue
        // reads `deferred_count` values during the call, each of which
        // passed the checks in `set`.
        to_result(unsafe { rvmx_glue_uret_load(self.deferred.as_ptr(), self.deferred_count as u32) })
    }

    /// Loads the guest's KERNEL_GS_BASE into this CPU and returns the
    /// host's (the VMM's GS base).
    ///
    /// # Safety
    ///
    /// Preemption must be off until `leave_kernel_gs_base`, and the CPU stays
    /// in the kernel in between (SWAPGS would use the guest's value).
    pub(crate) unsafe fn enter_kernel_gs_base(&self) -> u64 {
        // SAFETY: KERNEL_GS_BASE exists on every 64-bit CPU; the guest's
        // value is canonical (`set`, or the CPU's own check on the guest's
        // WRMSR), so WRMSR cannot fault.
        unsafe {
            let host = msr::rdmsr(Msr(IA32_KERNEL_GS_BASE));
            if host != self.kernel_gs_base {
                msr::wrmsr(Msr(IA32_KERNEL_GS_BASE), self.kernel_gs_base);
            }
            host
        }
    }

    /// Saves the guest's KERNEL_GS_BASE and puts the host's back.
    ///
    /// # Safety
    ///
    /// `host` must be what `enter_kernel_gs_base` returned on this CPU.
    pub(crate) unsafe fn leave_kernel_gs_base(&mut self, host: u64) {
        // SAFETY: as in `enter_kernel_gs_base`; `host` is the host's own value.
        unsafe {
            self.kernel_gs_base = msr::rdmsr(Msr(IA32_KERNEL_GS_BASE));
            if host != self.kernel_gs_base {
                msr::wrmsr(Msr(IA32_KERNEL_GS_BASE), host);
            }
        }
    }

    /// Reads guest MSR `index`, or `None` if the guest has no such MSR.
    /// `live` says whether the guest's KERNEL_GS_BASE is in the CPU now (an
    /// exit handler, inside a guest section) or in `self` (an ioctl).
    pub(crate) fn get(&self, v: &Loaded<'_>, index: u32, live: bool) -> Option<u64> {
        if let Some(i) = self.deferred_slot(index) {
            return Some(self.deferred[i]);
        }
        if EmulatedMsrs::has(index) {
            // Inside a guest section only the guest's RDMSR asks.
            return self.emulated.get(index, if live { By::Guest } else { By::Vmm }).ok();
        }
        Some(match index {
            // SAFETY: KERNEL_GS_BASE exists on every 64-bit CPU; RDMSR only reads.
            IA32_KERNEL_GS_BASE if live => unsafe { msr::rdmsr(Msr(index)) },
            IA32_KERNEL_GS_BASE => self.kernel_gs_base,
            IA32_TSC => read_tsc().wrapping_add(v.read(TSC_OFFSET)),
            IA32_TSC_ADJUST => self.tsc_adjust,
            IA32_APIC_BASE => self.apic_base,
            IA32_SYSENTER_CS => u64::from(v.read(GUEST_SYSENTER_CS)),
            IA32_SYSENTER_ESP => v.read(GUEST_SYSENTER_ESP).0,
            IA32_SYSENTER_EIP => v.read(GUEST_SYSENTER_EIP).0,
            IA32_DEBUGCTL => v.read(GUEST_IA32_DEBUGCTL),
            IA32_PAT if self.pat_in_vmcs => v.read(GUEST_IA32_PAT),
            IA32_PAT => self.pat,
            IA32_EFER => v.read(GUEST_IA32_EFER),
            IA32_FS_BASE => v.read(GUEST_FS_BASE).0,
            IA32_GS_BASE => v.read(GUEST_GS_BASE).0,
            _ => return None,
        })
    }

    /// Writes guest MSR `index`, with the checks the CPU makes (a value it
    /// would refuse with #GP is `Refused`). `live` as in `get`; `host` says
    /// the VMM writes (KVM_SET_MSRS), which may also set EFER.LMA and
    /// change EFER.LME with paging on, as KVM allows for restoring state.
    pub(crate) fn set(&mut self, v: &mut Loaded<'_>, index: u32, value: u64, live: bool, host: bool) -> Result<(), Refused> {
        if let Some(i) = self.deferred_slot(index) {
            let ok = match index {
                IA32_FMASK | IA32_TSC_AUX => value >> 32 == 0,
                IA32_STAR => true,
                _ => canonical(value),
            };
            if !ok {
                return Err(Refused);
            }
            if live {
                // CAST: i < 5. SAFETY: inside a guest section (`live`),
                // preemption is off; the value passed the CPU's own checks.
                to_result(unsafe { rvmx_glue_uret_set(i as u32, value) }).map_err(|_| Refused)?;
            }
            self.deferred[i] = value;
            return Ok(());
        }
        if EmulatedMsrs::has(index) {
            return self.emulated.set(index, value, if host { By::Vmm } else { By::Guest }).map_err(|_| Refused);
        }
        let w = |r: Result| r.map_err(|_| Refused);
        match index {
            IA32_KERNEL_GS_BASE if !canonical(value) => Err(Refused),
            IA32_KERNEL_GS_BASE if live => {
                // SAFETY: KERNEL_GS_BASE exists, the value is canonical;
                // inside a guest section the CPU holds the guest's value
                // (`enter_kernel_gs_base`).
                unsafe { msr::wrmsr(Msr(index), value) };
                Ok(())
            }
            IA32_KERNEL_GS_BASE => {
                self.kernel_gs_base = value;
                Ok(())
            }
            // KVM's rules (x86.c kvm_set_msr_common): the guest's write of
            // the TSC moves TSC_ADJUST by as much as the TSC moved, and its
            // write of TSC_ADJUST moves the TSC by as much as TSC_ADJUST
            // moved; the VMM's writes (restoring state) set one without
            // touching the other. All modulo 2^64, as the CPU's counters.
            IA32_TSC => {
                let offset = value.wrapping_sub(read_tsc());
                if !host {
                    let moved = offset.wrapping_sub(v.read(TSC_OFFSET));
                    self.tsc_adjust = self.tsc_adjust.wrapping_add(moved);
                }
                w(v.write(TSC_OFFSET, offset))
            }
            IA32_TSC_ADJUST => {
                if !host {
                    let moved = value.wrapping_sub(self.tsc_adjust);
                    w(v.write(TSC_OFFSET, v.read(TSC_OFFSET).wrapping_add(moved)))?;
                }
                self.tsc_adjust = value;
                Ok(())
            }
            IA32_APIC_BASE => {
                // Reserved: bits 0-7 and 9, and anything above 52 bits.
                if value & 0xfff0_0000_0000_02ff != 0 {
                    return Err(Refused);
                }
                self.apic_base = value;
                Ok(())
            }
            // CAST: the VMCS field is 32 bits wide, as KVM writes it.
            IA32_SYSENTER_CS => w(v.write(GUEST_SYSENTER_CS, value as u32)),
            IA32_SYSENTER_ESP | IA32_SYSENTER_EIP if !canonical(value) => Err(Refused),
            IA32_SYSENTER_ESP => w(v.write(GUEST_SYSENTER_ESP, Natural(value))),
            IA32_SYSENTER_EIP => w(v.write(GUEST_SYSENTER_EIP, Natural(value))),
            IA32_DEBUGCTL => w(v.write(GUEST_IA32_DEBUGCTL, emulated::debugctl_write(value).map_err(|_| Refused)?)),
            IA32_PAT if !valid_pat(value) => Err(Refused),
            IA32_PAT if self.pat_in_vmcs => w(v.write(GUEST_IA32_PAT, value)),
            IA32_PAT => {
                self.pat = value;
                Ok(())
            }
            IA32_EFER => {
                let old = v.read(GUEST_IA32_EFER);
                if value & !EFER_ALLOWED != 0 || value & !supported_efer() != 0 {
                    return Err(Refused);
                }
                let paging = v.guest_cr0() & crate::hw::cr::CR0_PG != 0;
                if !host && paging && (old ^ value) & EFER_LME != 0 {
                    return Err(Refused);
                }
                // Nobody writes LMA: the CPU sets it when paging goes on
                // with LME set (exits/cr.rs); KVM_SET_SREGS may set it.
                w(v.write(GUEST_IA32_EFER, (value & !EFER_LMA) | (old & EFER_LMA)))
            }
            IA32_FS_BASE | IA32_GS_BASE if !canonical(value) => Err(Refused),
            IA32_FS_BASE => w(v.write(GUEST_FS_BASE, Natural(value))),
            IA32_GS_BASE => w(v.write(GUEST_GS_BASE, Natural(value))),
            _ => Err(Refused),
        }
    }
}

/// EFER bits this CPU implements (CPUID 0x80000001:EDX: SYSCALL, NX, LM).
fn supported_efer() -> u64 {
    let edx = crate::hw::cpuid(0x8000_0001, 0)[3];
    let mut s = 0;
    if edx & (1 << 11) != 0 {
        s |= 1 << 0;
    }
    if edx & (1 << 20) != 0 {
        s |= 1 << 11;
    }
    if edx & (1 << 29) != 0 {
        s |= EFER_LME | EFER_LMA;
    }
    s
}

/// The host's time-stamp counter.
pub(crate) fn read_tsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear in the kernel).
    unsafe { core::arch::x86_64::_rdtsc() }
}
