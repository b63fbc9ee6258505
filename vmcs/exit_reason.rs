// SPDX-License-Identifier: GPL-2.0

//! Basic exit reasons (SDM Vol. 3D, Appendix C) that rvmx handles: the
//! low 16 bits of the VMCS's EXIT_REASON field say why the CPU left the
//! guest. exits/mod.rs maps each to its handler.

pub(crate) const EXCEPTION_OR_NMI: u32 = 0;
pub(crate) const EXTERNAL_INTERRUPT: u32 = 1;
pub(crate) const TRIPLE_FAULT: u32 = 2;
pub(crate) const INTERRUPT_WINDOW: u32 = 7;
pub(crate) const NMI_WINDOW: u32 = 8;
pub(crate) const CPUID: u32 = 10;
pub(crate) const HLT: u32 = 12;
pub(crate) const INVD: u32 = 13;
pub(crate) const RDPMC: u32 = 15;
pub(crate) const VMCALL: u32 = 18;
pub(crate) const VMCLEAR: u32 = 19;
pub(crate) const VMLAUNCH: u32 = 20;
pub(crate) const VMPTRLD: u32 = 21;
pub(crate) const VMPTRST: u32 = 22;
pub(crate) const VMREAD: u32 = 23;
pub(crate) const VMRESUME: u32 = 24;
pub(crate) const VMWRITE: u32 = 25;
pub(crate) const VMXOFF: u32 = 26;
pub(crate) const VMXON: u32 = 27;
pub(crate) const CR_ACCESS: u32 = 28;
pub(crate) const DR_ACCESS: u32 = 29;
pub(crate) const IO_INSTRUCTION: u32 = 30;
pub(crate) const RDMSR: u32 = 31;
pub(crate) const WRMSR: u32 = 32;
pub(crate) const MWAIT: u32 = 36;
pub(crate) const MONITOR: u32 = 39;
pub(crate) const EPT_VIOLATION: u32 = 48;
pub(crate) const EPT_MISCONFIG: u32 = 49;
pub(crate) const INVEPT: u32 = 50;
pub(crate) const PREEMPTION_TIMER: u32 = 52;
pub(crate) const INVVPID: u32 = 53;
pub(crate) const WBINVD: u32 = 54;
pub(crate) const XSETBV: u32 = 55;
/// VM entry failed because of a machine check (with ENTRY_FAILURE).
pub(crate) const MCE_DURING_ENTRY: u32 = 41;
pub(crate) const VMFUNC: u32 = 59;
/// Bit 31 of the exit reason: the VM entry failed (SDM §28.8).
pub(crate) const ENTRY_FAILURE: u32 = 1 << 31;
pub(crate) const COUNT: usize = 70;
