// SPDX-License-Identifier: GPL-2.0

//! The guest's model-specific registers: which MSRs a guest has, where each
//! one's value lives, the MSR bitmap that lets the guest use some of them
//! without a VM exit, and the rules for reading and writing them, shared by
//! KVM_GET_MSRS/KVM_SET_MSRS (the VMM) and the guest's own RDMSR/WRMSR
//! (exits/msr.rs). An MSR not listed here does not exist for the guest:
//! its RDMSR or WRMSR gets #GP(0), as on a CPU without it, and KVM_GET_MSRS
//! stops there. The host's MSRs are never written with a guest's value
//! except the swapped ones below, and those only after the checks the CPU
//! itself would make (a bad value would fault in the host).
//!
//! Where each value lives:
//! - in the VMCS guest-state area, loaded by VM entry and saved by VM exit:
//!   EFER, PAT, SYSENTER_CS/ESP/EIP, FS and GS base (segment base fields);
//!   the TSC is the host's TSC plus the VMCS's TSC offset;
//! - in `GuestMsrs::swapped`, loaded into the CPU by rvmx for each guest
//!   section (vcpu/mod.rs) because VM entry and exit do not switch them and the
//!   host needs its own values only on system-call entry and in user mode:
//!   KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, TSC_AUX;
//! - only in `GuestMsrs` (emulated, no hardware effect): APIC_BASE (there is
//!   no local APIC), MISC_ENABLE.

use crate::hw::msr::{self, Msr};
use crate::vmcs::{fields::*, Loaded};
use kernel::prelude::*;

pub(crate) const IA32_TSC: u32 = 0x10;
pub(crate) const IA32_APIC_BASE: u32 = 0x1b;
pub(crate) const IA32_SYSENTER_CS: u32 = 0x174;
pub(crate) const IA32_SYSENTER_ESP: u32 = 0x175;
pub(crate) const IA32_SYSENTER_EIP: u32 = 0x176;
pub(crate) const IA32_MISC_ENABLE: u32 = 0x1a0;
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

/// The MSRs rvmx swaps around a guest section, in `GuestMsrs::swapped`
/// order. TSC_AUX is last: it is swapped only on CPUs that have it.
pub(crate) const SWAPPED: [u32; 6] = [IA32_KERNEL_GS_BASE, IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_TSC_AUX];

/// What KVM_GET_MSR_INDEX_LIST reports: the MSRs a VMM must save and
/// restore with KVM_GET_MSRS/KVM_SET_MSRS to migrate a vCPU. As in KVM,
/// the ones KVM_GET_SREGS already carries (EFER, APIC_BASE, and FS/GS base
/// in the segments) are not listed, though KVM_GET_MSRS reads them too.
pub(crate) const INDEX_LIST: [u32; 12] = [
    IA32_TSC, IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, IA32_MISC_ENABLE, IA32_PAT,
    IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_TSC_AUX,
];

/// EFER bits a guest may set: SCE (SYSCALL), LME, LMA (which the CPU, not
/// the guest, sets), NXE.
const EFER_ALLOWED: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);
const EFER_LMA: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
/// KVM's reset value of MISC_ENABLE: PEBS and BTS unavailable.
const MISC_ENABLE_RESET: u64 = (1 << 11) | (1 << 12);
/// APIC_BASE: BSP flag, x2APIC enable, global enable, and the base address.
const APIC_BASE_BSP: u64 = 1 << 8;

/// The guest MSR values that do not live in the VMCS.
pub(crate) struct GuestMsrs {
    /// The guest's values of `SWAPPED[..swap_count]` while it does not run.
    pub(crate) swapped: [u64; SWAPPED.len()],
    /// How many of `SWAPPED` this CPU has (TSC_AUX needs RDTSCP or RDPID).
    pub(crate) swap_count: usize,
    pub(crate) apic_base: u64,
    misc_enable: u64,
    /// Whether VM entry and exit switch PAT (optional controls); if not,
    /// the guest's PAT is only remembered here.
    pat_in_vmcs: bool,
    pat: u64,
}

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

fn has_tsc_aux() -> bool {
    let ext = crate::hw::cpuid(0x8000_0001, 0);
    let leaf7 = crate::hw::cpuid(7, 0);
    ext[3] & (1 << 27) != 0 || leaf7[2] & (1 << 22) != 0
}

/// The MSR bitmap: one bit per MSR and direction; a set bit makes the
/// access exit (SDM Vol. 3C §25.6.9). Four 1 KiB parts: reads of
/// 0..0x1fff, reads of 0xc0000000..0xc0001fff, then writes of each.
pub(crate) fn fill_bitmap(bitmap: &mut [u8; 4096], swap_count: usize) {
    bitmap.fill(0xff);
    let mut pass = |index: u32| {
        let (part, bit) = if index >= 0xc000_0000 { (1024, index - 0xc000_0000) } else { (0, index) };
        for base in [part, part + 2048] {
            // CAST: `bit` < 0x2000, so the byte index is < 4096.
            bitmap[base + (bit / 8) as usize] &= !(1 << (bit % 8));
        }
    };
    // State the CPU switches (VMCS) or rvmx swaps: the guest may use it
    // freely; the CPU checks the values itself, as on bare metal.
    for m in [IA32_FS_BASE, IA32_GS_BASE, IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP] {
        pass(m);
    }
    for &m in &SWAPPED[..swap_count] {
        pass(m);
    }
}

impl GuestMsrs {
    /// The reset values (as KVM's kvm_vcpu_reset).
    pub(crate) fn new(vcpu_id: u32, pat_in_vmcs: bool) -> Self {
        let swap_count = if has_tsc_aux() { SWAPPED.len() } else { SWAPPED.len() - 1 };
        GuestMsrs {
            swapped: [0; SWAPPED.len()],
            swap_count,
            apic_base: 0xfee0_0000 | (1 << 11) | if vcpu_id == 0 { APIC_BASE_BSP } else { 0 },
            misc_enable: MISC_ENABLE_RESET,
            pat_in_vmcs,
            pat: 0x0007_0406_0007_0406,
        }
    }

    fn swapped_slot(&self, index: u32) -> Option<usize> {
        SWAPPED[..self.swap_count].iter().position(|&m| m == index)
    }

    /// Loads the guest's swapped MSRs into this CPU and returns the host's.
    ///
    /// # Safety
    ///
    /// Preemption must be off until `put_host` restores the host's values,
    /// and nothing may use them in between (no return to user mode, no
    /// SYSCALL: the CPU stays in the kernel, in a guest section).
    pub(crate) unsafe fn load_guest(&self) -> [u64; SWAPPED.len()] {
        let mut host = [0; SWAPPED.len()];
        for i in 0..self.swap_count {
            // SAFETY: these MSRs exist (TSC_AUX only if counted in); the
            // guest values passed the checks in `set`, so WRMSR cannot fault.
            unsafe {
                host[i] = msr::rdmsr(Msr(SWAPPED[i]));
                if host[i] != self.swapped[i] {
                    msr::wrmsr(Msr(SWAPPED[i]), self.swapped[i]);
                }
            }
        }
        host
    }

    /// Saves the guest's swapped MSRs and puts the host's back.
    ///
    /// # Safety
    ///
    /// `host` must be what `load_guest` returned on this CPU.
    pub(crate) unsafe fn put_host(&mut self, host: &[u64; SWAPPED.len()]) {
        for i in 0..self.swap_count {
            // SAFETY: as in `load_guest`; `host` holds the host's own values.
            unsafe {
                self.swapped[i] = msr::rdmsr(Msr(SWAPPED[i]));
                if host[i] != self.swapped[i] {
                    msr::wrmsr(Msr(SWAPPED[i]), host[i]);
                }
            }
        }
    }

    /// Reads guest MSR `index`, or `None` if the guest has no such MSR.
    /// `live` says whether the swapped MSRs are in the CPU now (an exit
    /// handler, inside a guest section) or in `self` (an ioctl).
    pub(crate) fn get(&self, v: &Loaded<'_>, index: u32, live: bool) -> Option<u64> {
        if let Some(i) = self.swapped_slot(index) {
            return Some(if live {
                // SAFETY: the MSR exists (`swap_count`); RDMSR only reads.
                unsafe { msr::rdmsr(Msr(index)) }
            } else {
                self.swapped[i]
            });
        }
        Some(match index {
            IA32_TSC => read_tsc().wrapping_add(v.read(TSC_OFFSET)),
            IA32_APIC_BASE => self.apic_base,
            IA32_SYSENTER_CS => u64::from(v.read(GUEST_SYSENTER_CS)),
            IA32_SYSENTER_ESP => v.read(GUEST_SYSENTER_ESP).0,
            IA32_SYSENTER_EIP => v.read(GUEST_SYSENTER_EIP).0,
            IA32_MISC_ENABLE => self.misc_enable,
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
        if let Some(i) = self.swapped_slot(index) {
            let ok = match index {
                IA32_FMASK | IA32_TSC_AUX => value >> 32 == 0,
                IA32_STAR => true,
                _ => canonical(value),
            };
            if !ok {
                return Err(Refused);
            }
            if live {
                // SAFETY: the MSR exists and the value passed the CPU's own
                // checks; inside a guest section the CPU holds the guest's
                // value (see `load_guest`).
                unsafe { msr::wrmsr(Msr(index), value) };
            } else {
                self.swapped[i] = value;
            }
            return Ok(());
        }
        let w = |r: Result| r.map_err(|_| Refused);
        match index {
            IA32_TSC => w(v.write(TSC_OFFSET, value.wrapping_sub(read_tsc()))),
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
            IA32_MISC_ENABLE => {
                self.misc_enable = value;
                Ok(())
            }
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
