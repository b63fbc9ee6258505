// SPDX-License-Identifier: GPL-2.0

//! The VM-entry checks, written out: when the CPU refuses a VM entry it
//! says only *that* a check failed ("invalid control field", "invalid
//! host-state field", or exit reason 33 "invalid guest state"), never
//! *which*. This file holds the SDM's checks as code so that rvmx can name
//! the first one a VMCS breaks (exits/entry_failure.rs collects the fields;
//! `rvmx-run` prints the words).
//!
//! Section numbers are those of the Intel SDM editions from 2023 on, where
//! Vol. 3C chapter 27 is "VM Entries" (chapter 26 in older editions):
//! §27.2.1 checks on the VMX controls, §27.2.2-27.2.4 on the host-state
//! area, §27.3.1 on the guest-state area. The order below is the SDM's; a
//! CPU may check in another order, so with several broken rules the CPU's
//! reason and the first rule named here can differ (both are still broken).
//!
//! Kernel-independent: only `core` and the control bits of
//! vmcs/controls.rs (which every crate that compiles this file includes
//! beside it, as `controls`), so `cargo test` (tests/unit) checks it on the
//! build machine, and the launcher compiles the same file to turn a check
//! number into words.

use super::controls::{entry, exit, pin, proc, proc2};

/// A segment register of the guest-state area, as `Violation::segment`
/// names it; the number is what the run page carries (0: none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Es = 1,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
    Ldtr,
    Tr,
}

impl Seg {
    pub(crate) const ALL: [Seg; 8] = [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds, Seg::Fs, Seg::Gs, Seg::Ldtr, Seg::Tr];

    pub(crate) fn name(self) -> &'static str {
        ["ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR"][self as usize - 1]
    }

    #[allow(dead_code)]
    pub(crate) fn from_number(n: u8) -> Option<Seg> {
        Seg::ALL.iter().copied().find(|s| *s as u8 == n)
    }
}

macro_rules! checks {
    ($($n:literal $name:ident $sec:literal $rule:literal;)*) => {
        /// One rule of the SDM's VM-entry checks. The number is rvmx's
        /// (1xx controls, 2xx host state, 3xx guest state), stable across
        /// releases: userspace receives it in the run page.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u16)]
        pub(crate) enum Check { $($name = $n,)* }

        impl Check {
            pub(crate) const ALL: &'static [Check] = &[$(Check::$name,)*];

            /// The SDM section that states the rule.
            pub(crate) fn section(self) -> &'static str {
                match self { $(Check::$name => $sec,)* }
            }

            /// The rule, in words.
            pub(crate) fn rule(self) -> &'static str {
                match self { $(Check::$name => $rule,)* }
            }
        }
    };
}

checks! {
    // §27.2.1.1 VM-execution controls, §27.2.1.2 VM-exit controls,
    // §27.2.1.3 VM-entry controls.
    101 PinControls "27.2.1.1" "pin-based controls: a bit is set that IA32_VMX_(TRUE_)PINBASED_CTLS forbids, or clear that it requires";
    102 ProcControls "27.2.1.1" "primary processor-based controls: a bit the capability MSR forbids or requires";
    103 Proc2Controls "27.2.1.1" "secondary processor-based controls: a bit IA32_VMX_PROCBASED_CTLS2 forbids";
    104 Cr3TargetCount "27.2.1.1" "the CR3-target count must be at most 4";
    105 MsrBitmapAddress "27.2.1.1" "the MSR-bitmap address must be 4 KiB aligned and below MAXPHYADDR";
    106 NmiControls "27.2.1.1" "\"virtual NMIs\" requires \"NMI exiting\", and \"NMI-window exiting\" requires \"virtual NMIs\"";
    107 EptPointer "27.2.1.1" "EPT pointer: memory type UC or WB as allowed, a 4-level walk, A/D only if supported, reserved bits 11:7 clear, address below MAXPHYADDR";
    108 VpidZero "27.2.1.1" "with \"enable VPID\" the VPID must not be 0";
    109 UnrestrictedNeedsEpt "27.2.1.1" "\"unrestricted guest\" requires \"enable EPT\"";
    110 ExitControls "27.2.1.2" "VM-exit controls: a bit the capability MSR forbids or requires";
    111 ExitMsrAreas "27.2.1.2" "VM-exit MSR-store/load areas must be 16-byte aligned and below MAXPHYADDR";
    112 EntryControls "27.2.1.3" "VM-entry controls: a bit the capability MSR forbids or requires";
    113 EventType "27.2.1.3" "event injection: interruption type 1 is reserved, type 7 needs monitor-trap-flag support";
    114 EventVector "27.2.1.3" "event injection: an NMI must have vector 2, a hardware exception a vector up to 31, type 7 vector 0";
    115 EventErrorCode "27.2.1.3" "event injection: \"deliver error code\" must be set exactly for #DF #TS #NP #SS #GP #PF #AC as hardware exceptions in protected mode (or without unrestricted guest)";
    116 EventReserved "27.2.1.3" "event injection: bits 30:12 of the interruption-information field must be 0";
    117 EventErrorCodeBits "27.2.1.3" "event injection: bits 31:16 of the error code must be 0";
    118 EventLength "27.2.1.3" "event injection: software interrupts and exceptions need an instruction length of 1 to 15";
    119 EntryMsrArea "27.2.1.3" "VM-entry MSR-load area must be 16-byte aligned and below MAXPHYADDR";

    // §27.2.2 host control registers and MSRs, §27.2.3 host segment and
    // descriptor-table registers, §27.2.4 address-space size.
    201 HostCr0 "27.2.2" "host CR0 must respect IA32_VMX_CR0_FIXED0/FIXED1";
    202 HostCr4 "27.2.2" "host CR4 must respect IA32_VMX_CR4_FIXED0/FIXED1";
    203 HostCr3 "27.2.2" "host CR3 must have no bit set at or above MAXPHYADDR";
    204 HostCanonical "27.2.2" "host FS/GS/TR/GDTR/IDTR bases, SYSENTER_ESP/EIP and RIP must be canonical";
    205 HostPat "27.2.2" "host IA32_PAT: each entry must be a valid memory type (0, 1, 4-7)";
    206 HostEfer "27.2.2" "host IA32_EFER: reserved bits clear, LMA and LME equal to \"host address-space size\"";
    207 HostSelectors "27.2.3" "host selectors must have RPL 0 and TI 0; CS and TR must not be 0";
    208 HostAddressSpace "27.2.4" "a 64-bit host needs \"host address-space size\" = 1 and CR4.PAE = 1";

    // §27.3.1.1 guest control registers, debug registers and MSRs.
    301 Cr0Fixed "27.3.1.1" "CR0 must have the bits IA32_VMX_CR0_FIXED0 sets (PE and PG exempt for an unrestricted guest) and none IA32_VMX_CR0_FIXED1 clears";
    302 Cr0PgWithoutPe "27.3.1.1" "CR0.PG = 1 requires CR0.PE = 1";
    303 Cr4Fixed "27.3.1.1" "CR4 must have the bits IA32_VMX_CR4_FIXED0 sets (VMXE) and none IA32_VMX_CR4_FIXED1 clears";
    304 Cr4PaeForLongMode "27.3.1.1" "an IA-32e mode guest needs CR4.PAE = 1";
    305 Cr4PcideOutsideLongMode "27.3.1.1" "CR4.PCIDE must be 0 unless the guest is in IA-32e mode";
    306 Cr3Width "27.3.1.1" "CR3 must have no bit set at or above MAXPHYADDR";
    307 Dr7High "27.3.1.1" "with \"load debug controls\", DR7 bits 63:32 must be 0";
    308 SysenterCanonical "27.3.1.1" "IA32_SYSENTER_ESP and IA32_SYSENTER_EIP must be canonical";
    309 PatValid "27.3.1.1" "with \"load IA32_PAT\", each PAT entry must be a valid memory type (0, 1, 4-7)";
    310 EferReserved "27.3.1.1" "with \"load IA32_EFER\", EFER's reserved bits must be 0";
    311 EferLma "27.3.1.1" "with \"load IA32_EFER\", EFER.LMA must equal the \"IA-32e mode guest\" entry control";
    312 EferLme "27.3.1.1" "with \"load IA32_EFER\" and CR0.PG = 1, EFER.LME must equal EFER.LMA";
    313 CetNeedsWp "27.3.1.1" "CR4.CET = 1 requires CR0.WP = 1";

    // §27.3.1.2 guest segment registers.
    321 V86Segment "27.3.1.2" "in virtual-8086 mode each segment needs base = selector * 16, limit 0xffff, access rights 0xf3";
    322 TrTi "27.3.1.2" "TR's selector must have TI = 0 (the TSS is in the GDT)";
    323 LdtrTi "27.3.1.2" "a usable LDTR's selector must have TI = 0";
    324 SsRplCsRpl "27.3.1.2" "without unrestricted guest, SS.RPL must equal CS.RPL";
    325 BaseCanonical "27.3.1.2" "the TR, FS and GS bases (and a usable LDTR's) must be canonical";
    326 BaseHigh "27.3.1.2" "the CS base (and a usable SS, DS or ES base) must have bits 63:32 clear";
    327 CsType "27.3.1.2" "CS type must be an accessed code segment (9, 11, 13, 15), or 3 (accessed read/write data) for an unrestricted guest";
    328 SsType "27.3.1.2" "a usable SS must be an accessed read/write data segment (type 3 or 7)";
    329 DataAccessed "27.3.1.2" "a usable DS, ES, FS or GS must have its accessed bit (type bit 0) set";
    330 CodeReadable "27.3.1.2" "a usable DS, ES, FS or GS that is a code segment must be readable";
    331 SegS "27.3.1.2" "CS and the usable SS, DS, ES, FS, GS must be code/data segments (S = 1)";
    332 CsDplData "27.3.1.2" "a CS of type 3 (unrestricted guest) must have DPL 0";
    333 CsDplNonConforming "27.3.1.2" "a non-conforming CS (type 9 or 11) must have DPL equal to SS.DPL";
    334 CsDplConforming "27.3.1.2" "a conforming CS (type 13 or 15) must have DPL at most SS.DPL";
    335 SsDplRpl "27.3.1.2" "without unrestricted guest, SS.DPL must equal SS.RPL";
    336 SsDplRealMode "27.3.1.2" "SS.DPL must be 0 when CS is type 3 or CR0.PE = 0";
    337 DataDplRpl "27.3.1.2" "without unrestricted guest, a usable data or non-conforming code DS, ES, FS, GS must have DPL >= RPL";
    338 SegPresent "27.3.1.2" "CS and the usable SS, DS, ES, FS, GS must be present (P = 1)";
    339 SegReserved "27.3.1.2" "access-rights bits 11:8 and 31:17 must be 0";
    340 CsLongAndDb "27.3.1.2" "in an IA-32e mode guest, CS.L = 1 requires CS.D/B = 0";
    341 Granularity "27.3.1.2" "limit and G disagree: limit bits 11:0 not all 1 needs G = 0, limit bits 31:20 not all 0 needs G = 1";
    342 TrType "27.3.1.2" "TR must be a busy TSS: type 11, or type 3 (16-bit) outside IA-32e mode";
    343 TrSystem "27.3.1.2" "TR must be a system segment (S = 0)";
    344 TrPresent "27.3.1.2" "TR must be present (P = 1)";
    345 TrUnusable "27.3.1.2" "TR must be usable";
    346 LdtrType "27.3.1.2" "a usable LDTR must be an LDT: type 2, S = 0, P = 1";

    // §27.3.1.3 descriptor-table registers.
    351 TableCanonical "27.3.1.3" "the GDTR and IDTR bases must be canonical";
    352 TableLimit "27.3.1.3" "the GDTR and IDTR limits must have bits 31:16 clear";

    // §27.3.1.4 RIP and RFLAGS.
    361 RipHigh "27.3.1.4" "RIP bits 63:32 must be 0 unless the guest is in 64-bit mode (IA-32e mode guest and CS.L = 1)";
    362 RipCanonical "27.3.1.4" "in 64-bit mode RIP must be canonical";
    363 RflagsReserved "27.3.1.4" "RFLAGS bits 63:22, 15, 5 and 3 must be 0 and bit 1 must be 1";
    364 RflagsVm "27.3.1.4" "RFLAGS.VM must be 0 in an IA-32e mode guest or with CR0.PE = 0";
    365 RflagsIfForInterrupt "27.3.1.4" "injecting an external interrupt needs RFLAGS.IF = 1";

    // §27.3.1.5 non-register state.
    371 ActivityState "27.3.1.5" "the activity state must be one the CPU supports (IA32_VMX_MISC bits 8:6)";
    372 HltWithSsDpl "27.3.1.5" "the HLT activity state needs SS.DPL = 0";
    373 ActivityWithBlocking "27.3.1.5" "blocking by STI or MOV SS needs the active activity state";
    374 ActivityForEvent "27.3.1.5" "an injected event needs an activity state that can take it (not wait-for-SIPI; only NMI or #MC in shutdown)";
    375 InterruptibilityReserved "27.3.1.5" "interruptibility-state bits 31:5 must be 0";
    376 StiAndMovSs "27.3.1.5" "blocking by STI and by MOV SS cannot both be set";
    377 StiWithoutIf "27.3.1.5" "blocking by STI must be 0 when RFLAGS.IF = 0";
    378 BlockingForInterrupt "27.3.1.5" "injecting an external interrupt needs no blocking by STI or MOV SS";
    379 BlockingForNmi "27.3.1.5" "injecting an NMI needs no blocking by MOV SS (and, on some CPUs, by STI)";
    380 SmiBlocking "27.3.1.5" "blocking by SMI must be 0 outside SMM";
    381 NmiBlockingForNmi "27.3.1.5" "with virtual NMIs, injecting an NMI needs no NMI blocking";
    382 PendingDbgReserved "27.3.1.5" "pending debug exceptions bits 11:4, 13, 15 and 63:17 must be 0";
    383 PendingDbgBs "27.3.1.5" "with blocking by STI/MOV SS or in HLT, pending-debug BS (bit 14) must equal RFLAGS.TF (when DEBUGCTL.BTF = 0)";
    384 LinkPointer "27.3.1.5" "the VMCS link pointer must be all ones (rvmx uses no shadow VMCS)";
    385 Pdpte "27.3.1.6" "with PAE paging and EPT, each present PDPTE must have bits 2:1, 8:5 and those at or above MAXPHYADDR clear";

    // Not SDM rules: what a known emulator checks wrongly. Named only when
    // no SDM rule is broken.
    901 Bochs27CsRpl "none (Bochs 2.7 only)" "no SDM rule is broken; Bochs 2.7 also refuses a code-segment CS whose selector RPL differs from its DPL (non-conforming) or is below it (conforming), a rule the SDM does not have (Bochs fixed it after 2.7, commit 6481d24e0)";
}

impl Check {
    /// The check with rvmx number `n`, if any (for userspace: the
    /// launcher turns the number in the run page back into words).
    #[allow(dead_code)]
    pub(crate) fn from_number(n: u16) -> Option<Check> {
        Check::ALL.iter().copied().find(|c| *c as u16 == n)
    }
}

/// The first rule a VMCS breaks: which rule, for which segment register
/// (segment rules), and the value of the field that breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) check: Check,
    pub(crate) segment: Option<Seg>,
    pub(crate) value: u64,
}

/// What this CPU allows, from its VMX capability MSRs (caps.rs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpu {
    pub(crate) cr0_fixed0: u64,
    pub(crate) cr0_fixed1: u64,
    pub(crate) cr4_fixed0: u64,
    pub(crate) cr4_fixed1: u64,
    /// Physical-address width (CPUID.80000008H:EAX[7:0]).
    pub(crate) maxphyaddr: u8,
    /// Linear-address width (CPUID.80000008H:EAX[15:8]): 48 or 57.
    pub(crate) linear_bits: u8,
    /// (must be one, may be one) for pin, proc, proc2, exit, entry.
    pub(crate) pin: (u32, u32),
    pub(crate) proc: (u32, u32),
    pub(crate) proc2: (u32, u32),
    pub(crate) exit: (u32, u32),
    pub(crate) entry: (u32, u32),
    pub(crate) ept_vpid: u64,
    /// IA32_VMX_MISC.
    pub(crate) misc: u64,
}

/// The VMX controls that the entry checks read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Controls {
    pub(crate) pin: u32,
    pub(crate) proc: u32,
    pub(crate) proc2: u32,
    pub(crate) exit: u32,
    pub(crate) entry: u32,
    pub(crate) cr3_target_count: u32,
    pub(crate) msr_bitmap: u64,
    pub(crate) ept_pointer: u64,
    pub(crate) vpid: u16,
    pub(crate) exit_msr_store: (u32, u64),
    pub(crate) exit_msr_load: (u32, u64),
    pub(crate) entry_msr_load: (u32, u64),
    pub(crate) entry_intr_info: u32,
    pub(crate) entry_error_code: u32,
    pub(crate) entry_instruction_len: u32,
}

/// The host-state area.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Host {
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    /// ES, CS, SS, DS, FS, GS, TR.
    pub(crate) selectors: [u16; 7],
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) tr_base: u64,
    pub(crate) gdtr_base: u64,
    pub(crate) idtr_base: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) rip: u64,
    pub(crate) pat: u64,
    pub(crate) efer: u64,
}

/// A segment register of the guest-state area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) selector: u16,
    pub(crate) base: u64,
    pub(crate) limit: u32,
    /// Access rights in the VMCS format (type 3:0, S 4, DPL 6:5, P 7,
    /// AVL 12, L 13, D/B 14, G 15, unusable 16).
    pub(crate) ar: u32,
}

impl Segment {
    fn usable(&self) -> bool {
        self.ar & AR_UNUSABLE == 0
    }
    fn type_(&self) -> u32 {
        self.ar & 15
    }
    fn dpl(&self) -> u32 {
        (self.ar >> 5) & 3
    }
    fn rpl(&self) -> u32 {
        u32::from(self.selector & 3)
    }
}

/// The guest-state area.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Guest {
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) dr7: u64,
    pub(crate) debugctl: u64,
    pub(crate) pat: u64,
    pub(crate) efer: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    /// ES, CS, SS, DS, FS, GS, LDTR, TR (the order of `Seg`).
    pub(crate) seg: [Segment; 8],
    pub(crate) gdtr_base: u64,
    pub(crate) gdtr_limit: u32,
    pub(crate) idtr_base: u64,
    pub(crate) idtr_limit: u32,
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    pub(crate) activity: u32,
    pub(crate) interruptibility: u32,
    pub(crate) pending_dbg: u64,
    pub(crate) link_pointer: u64,
    pub(crate) pdpte: [u64; 4],
    /// Whether the logical processor is in SMM (never, for rvmx).
    pub(crate) in_smm: bool,
}

impl Guest {
    pub(crate) fn segment(&self, s: Seg) -> &Segment {
        &self.seg[s as usize - 1]
    }
}

// Bits, as the SDM names them.
const AR_S: u32 = 1 << 4;
const AR_P: u32 = 1 << 7;
const AR_L: u32 = 1 << 13;
const AR_DB: u32 = 1 << 14;
const AR_G: u32 = 1 << 15;
const AR_UNUSABLE: u32 = 1 << 16;
const AR_RESERVED: u32 = 0xf00 | 0xfffe_0000;
const CR0_PE: u64 = 1;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_CET: u64 = 1 << 23;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// SCE, LME, LMA, NXE: the EFER bits an Intel CPU defines.
const EFER_DEFINED: u64 = 1 | EFER_LME | EFER_LMA | (1 << 11);
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_RESERVED: u64 = !0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3);
const INTR_STI: u32 = 1;
const INTR_MOV_SS: u32 = 2;
const INTR_SMI: u32 = 4;
const INTR_NMI: u32 = 8;
const ACTIVITY_HLT: u32 = 1;
const ACTIVITY_SHUTDOWN: u32 = 2;
const ACTIVITY_SIPI: u32 = 3;
const EVENT_EXTERNAL: u32 = 0;
const EVENT_NMI: u32 = 2;
const EVENT_HW_EXCEPTION: u32 = 3;
const EVENT_OTHER: u32 = 7;

/// Whether `a` is canonical for a `bits`-wide linear address space.
fn canonical(a: u64, bits: u8) -> bool {
    let bits = u32::from(bits.clamp(32, 64));
    if bits == 64 {
        return true;
    }
    // CAST: an arithmetic shift copies bit (bits - 1) upwards.
    let shift = 64 - bits;
    (((a << shift) as i64) >> shift) as u64 == a
}

/// Whether the bits of `a` at or above `maxphyaddr` are all 0.
fn fits(a: u64, maxphyaddr: u8) -> bool {
    maxphyaddr >= 64 || a >> maxphyaddr == 0
}

/// Whether every byte of a PAT value is a valid memory type.
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4..=7))
}

/// Whether a control value respects a (must be one, may be one) pair.
fn allowed(v: u32, (must, may): (u32, u32)) -> bool {
    v & must == must && v & !may == 0
}

fn fail(check: Check, value: u64) -> Option<Violation> {
    Some(Violation { check, segment: None, value })
}

fn fail_seg(check: Check, s: Seg, value: u64) -> Option<Violation> {
    Some(Violation { check, segment: Some(s), value })
}

/// The VMX-control checks (§27.2.1) that can fail with VM-instruction
/// error 7 ("VM entry with invalid control field(s)"). `guest_cr0` is
/// needed by the event-injection rules.
pub(crate) fn check_controls(c: &Controls, cpu: &Cpu, guest_cr0: u64) -> Option<Violation> {
    let proc2 = if c.proc & proc::ACTIVATE_SECONDARY != 0 { c.proc2 } else { 0 };
    if !allowed(c.pin, cpu.pin) {
        return fail(Check::PinControls, c.pin.into());
    }
    if !allowed(c.proc, cpu.proc) {
        return fail(Check::ProcControls, c.proc.into());
    }
    if c.proc & proc::ACTIVATE_SECONDARY != 0 && !allowed(c.proc2, cpu.proc2) {
        return fail(Check::Proc2Controls, c.proc2.into());
    }
    if c.cr3_target_count > 4 {
        return fail(Check::Cr3TargetCount, c.cr3_target_count.into());
    }
    if c.proc & proc::USE_MSR_BITMAPS != 0 && (c.msr_bitmap & 0xfff != 0 || !fits(c.msr_bitmap, cpu.maxphyaddr)) {
        return fail(Check::MsrBitmapAddress, c.msr_bitmap);
    }
    if (c.pin & pin::VIRTUAL_NMIS != 0 && c.pin & pin::NMI_EXITING == 0)
        || (c.proc & proc::NMI_WINDOW_EXITING != 0 && c.pin & pin::VIRTUAL_NMIS == 0)
    {
        return fail(Check::NmiControls, c.pin.into());
    }
    if proc2 & proc2::ENABLE_EPT != 0 {
        let eptp = c.ept_pointer;
        let memtype_ok = match eptp & 7 {
            0 => cpu.ept_vpid & (1 << 8) != 0,
            6 => cpu.ept_vpid & (1 << 14) != 0,
            _ => false,
        };
        let ad_ok = eptp & (1 << 6) == 0 || cpu.ept_vpid & (1 << 21) != 0;
        if !memtype_ok || (eptp >> 3) & 7 != 3 || !ad_ok || eptp & 0xf80 != 0 || !fits(eptp, cpu.maxphyaddr) {
            return fail(Check::EptPointer, eptp);
        }
    }
    if proc2 & proc2::ENABLE_VPID != 0 && c.vpid == 0 {
        return fail(Check::VpidZero, 0);
    }
    if proc2 & proc2::UNRESTRICTED_GUEST != 0 && proc2 & proc2::ENABLE_EPT == 0 {
        return fail(Check::UnrestrictedNeedsEpt, proc2.into());
    }
    if !allowed(c.exit, cpu.exit) {
        return fail(Check::ExitControls, c.exit.into());
    }
    let area_ok = |(n, a): (u32, u64)| n == 0 || (a & 15 == 0 && fits(a.saturating_add(u64::from(n) * 16 - 1), cpu.maxphyaddr));
    if !area_ok(c.exit_msr_store) {
        return fail(Check::ExitMsrAreas, c.exit_msr_store.1);
    }
    if !area_ok(c.exit_msr_load) {
        return fail(Check::ExitMsrAreas, c.exit_msr_load.1);
    }
    if !allowed(c.entry, cpu.entry) {
        return fail(Check::EntryControls, c.entry.into());
    }
    if let Some(v) = check_event(c, cpu, proc2 & proc2::UNRESTRICTED_GUEST != 0, guest_cr0) {
        return Some(v);
    }
    if !area_ok(c.entry_msr_load) {
        return fail(Check::EntryMsrArea, c.entry_msr_load.1);
    }
    None
}

/// The event-injection rules of §27.2.1.3 (VM-entry interruption-
/// information field, error code, instruction length).
fn check_event(c: &Controls, cpu: &Cpu, unrestricted: bool, guest_cr0: u64) -> Option<Violation> {
    let info = c.entry_intr_info;
    if info & (1 << 31) == 0 {
        return None;
    }
    let (ty, vector) = ((info >> 8) & 7, info & 0xff);
    // Type 7 ("other event", MTF) needs IA32_VMX_PROCBASED_CTLS to allow
    // the monitor trap flag (bit 27).
    if ty == 1 || (ty == EVENT_OTHER && cpu.proc.1 & (1 << 27) == 0) {
        return fail(Check::EventType, info.into());
    }
    if (ty == EVENT_NMI && vector != 2) || (ty == EVENT_HW_EXCEPTION && vector > 31) || (ty == EVENT_OTHER && vector != 0) {
        return fail(Check::EventVector, info.into());
    }
    let needs_code = (!unrestricted || guest_cr0 & CR0_PE != 0)
        && ty == EVENT_HW_EXCEPTION
        && matches!(vector, 8 | 10..=14 | 17 | 21);
    if (info & (1 << 11) != 0) != needs_code {
        return fail(Check::EventErrorCode, info.into());
    }
    if info & 0x7fff_f000 != 0 {
        return fail(Check::EventReserved, info.into());
    }
    if info & (1 << 11) != 0 && c.entry_error_code >> 16 != 0 {
        return fail(Check::EventErrorCodeBits, c.entry_error_code.into());
    }
    // Software interrupt, privileged and software exception: the length
    // the guest's RIP advances by; 0 only with IA32_VMX_MISC[30].
    if matches!(ty, 4..=6) {
        let len = c.entry_instruction_len;
        let zero_ok = cpu.misc & (1 << 30) != 0;
        if len > 15 || (len == 0 && !zero_ok) {
            return fail(Check::EventLength, len.into());
        }
    }
    None
}

/// The host-state checks (§27.2.2-27.2.4) that can fail with
/// VM-instruction error 8 ("VM entry with invalid host-state field(s)").
/// rvmx runs only on 64-bit hosts.
pub(crate) fn check_host(h: &Host, c: &Controls, cpu: &Cpu) -> Option<Violation> {
    if h.cr0 & cpu.cr0_fixed0 != cpu.cr0_fixed0 || h.cr0 & !cpu.cr0_fixed1 != 0 {
        return fail(Check::HostCr0, h.cr0);
    }
    if h.cr4 & cpu.cr4_fixed0 != cpu.cr4_fixed0 || h.cr4 & !cpu.cr4_fixed1 != 0 {
        return fail(Check::HostCr4, h.cr4);
    }
    if !fits(h.cr3, cpu.maxphyaddr) {
        return fail(Check::HostCr3, h.cr3);
    }
    let bases = [h.fs_base, h.gs_base, h.tr_base, h.gdtr_base, h.idtr_base, h.sysenter_esp, h.sysenter_eip, h.rip];
    if let Some(b) = bases.iter().find(|b| !canonical(**b, cpu.linear_bits)) {
        return fail(Check::HostCanonical, *b);
    }
    if c.exit & exit::LOAD_IA32_PAT != 0 && !pat_valid(h.pat) {
        return fail(Check::HostPat, h.pat);
    }
    if c.exit & exit::LOAD_IA32_EFER != 0 {
        let host64 = c.exit & exit::HOST_ADDRESS_SPACE_SIZE != 0;
        if h.efer & !EFER_DEFINED != 0
            || (h.efer & EFER_LMA != 0) != host64
            || (h.efer & EFER_LME != 0) != host64
        {
            return fail(Check::HostEfer, h.efer);
        }
    }
    // ES, CS, SS, DS, FS, GS, TR.
    let sel = h.selectors;
    if sel.iter().any(|s| s & 7 != 0) || sel[1] == 0 || sel[6] == 0 {
        return fail(Check::HostSelectors, u64::from(sel[1]) | u64::from(sel[6]) << 16);
    }
    if c.exit & exit::HOST_ADDRESS_SPACE_SIZE == 0 || h.cr4 & CR4_PAE == 0 {
        return fail(Check::HostAddressSpace, c.exit.into());
    }
    None
}

/// The guest-state checks (§27.3.1), which fail with exit reason 33
/// ("VM-entry failure due to invalid guest state").
pub(crate) fn check_guest(g: &Guest, c: &Controls, cpu: &Cpu) -> Option<Violation> {
    let proc2 = if c.proc & proc::ACTIVATE_SECONDARY != 0 { c.proc2 } else { 0 };
    let unrestricted = proc2 & proc2::UNRESTRICTED_GUEST != 0;
    let ia32e = c.entry & entry::IA32E_MODE_GUEST != 0;
    check_registers(g, c, cpu, unrestricted, ia32e)
        .or_else(|| check_segments(g, cpu, unrestricted, ia32e))
        .or_else(|| check_tables(g, cpu))
        .or_else(|| check_rip_rflags(g, c, cpu, ia32e))
        .or_else(|| check_non_register(g, c, cpu))
        .or_else(|| check_pdptes(g, cpu, proc2 & proc2::ENABLE_EPT != 0, ia32e))
}

/// §27.3.1.1: control registers, debug registers, MSRs.
fn check_registers(g: &Guest, c: &Controls, cpu: &Cpu, unrestricted: bool, ia32e: bool) -> Option<Violation> {
    let fixed0 = if unrestricted { cpu.cr0_fixed0 & !(CR0_PE | CR0_PG) } else { cpu.cr0_fixed0 };
    if g.cr0 & fixed0 != fixed0 || g.cr0 & !cpu.cr0_fixed1 != 0 {
        return fail(Check::Cr0Fixed, g.cr0);
    }
    if g.cr0 & CR0_PG != 0 && g.cr0 & CR0_PE == 0 {
        return fail(Check::Cr0PgWithoutPe, g.cr0);
    }
    if g.cr4 & cpu.cr4_fixed0 != cpu.cr4_fixed0 || g.cr4 & !cpu.cr4_fixed1 != 0 {
        return fail(Check::Cr4Fixed, g.cr4);
    }
    if ia32e && g.cr4 & CR4_PAE == 0 {
        return fail(Check::Cr4PaeForLongMode, g.cr4);
    }
    if !ia32e && g.cr4 & CR4_PCIDE != 0 {
        return fail(Check::Cr4PcideOutsideLongMode, g.cr4);
    }
    if g.cr4 & CR4_CET != 0 && g.cr0 & CR0_WP == 0 {
        return fail(Check::CetNeedsWp, g.cr0);
    }
    if !fits(g.cr3, cpu.maxphyaddr) {
        return fail(Check::Cr3Width, g.cr3);
    }
    if c.entry & entry::LOAD_DEBUG_CONTROLS != 0 && g.dr7 >> 32 != 0 {
        return fail(Check::Dr7High, g.dr7);
    }
    for v in [g.sysenter_esp, g.sysenter_eip] {
        if !canonical(v, cpu.linear_bits) {
            return fail(Check::SysenterCanonical, v);
        }
    }
    if c.entry & entry::LOAD_IA32_PAT != 0 && !pat_valid(g.pat) {
        return fail(Check::PatValid, g.pat);
    }
    if c.entry & entry::LOAD_IA32_EFER != 0 {
        if g.efer & !EFER_DEFINED != 0 {
            return fail(Check::EferReserved, g.efer);
        }
        if (g.efer & EFER_LMA != 0) != ia32e {
            return fail(Check::EferLma, g.efer);
        }
        if g.cr0 & CR0_PG != 0 && (g.efer & EFER_LME != 0) != (g.efer & EFER_LMA != 0) {
            return fail(Check::EferLme, g.efer);
        }
    }
    None
}

/// Whether a segment's limit and G bit agree (§27.3.1.2, "G").
fn granularity_ok(s: &Segment) -> bool {
    let g = s.ar & AR_G != 0;
    !((s.limit & 0xfff != 0xfff && g) || (s.limit >> 20 != 0 && !g))
}

/// §27.3.1.2: segment registers.
fn check_segments(g: &Guest, cpu: &Cpu, unrestricted: bool, ia32e: bool) -> Option<Violation> {
    let (cs, ss, tr, ldtr) = (g.segment(Seg::Cs), g.segment(Seg::Ss), g.segment(Seg::Tr), g.segment(Seg::Ldtr));
    let data = [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs];
    if g.rflags & RFLAGS_VM != 0 {
        // Virtual-8086 mode: the six segments look like real mode's.
        for s in [Seg::Cs, Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
            let r = g.segment(s);
            if r.base != u64::from(r.selector) << 4 || r.limit != 0xffff || r.ar != 0xf3 {
                return fail_seg(Check::V86Segment, s, r.ar.into());
            }
        }
    }
    if tr.selector & 4 != 0 {
        return fail_seg(Check::TrTi, Seg::Tr, tr.selector.into());
    }
    if ldtr.usable() && ldtr.selector & 4 != 0 {
        return fail_seg(Check::LdtrTi, Seg::Ldtr, ldtr.selector.into());
    }
    let v86 = g.rflags & RFLAGS_VM != 0;
    if !v86 && !unrestricted && ss.rpl() != cs.rpl() {
        return fail_seg(Check::SsRplCsRpl, Seg::Ss, ss.selector.into());
    }
    // Bases.
    for s in [Seg::Tr, Seg::Fs, Seg::Gs] {
        if !canonical(g.segment(s).base, cpu.linear_bits) {
            return fail_seg(Check::BaseCanonical, s, g.segment(s).base);
        }
    }
    if ldtr.usable() && !canonical(ldtr.base, cpu.linear_bits) {
        return fail_seg(Check::BaseCanonical, Seg::Ldtr, ldtr.base);
    }
    if cs.base >> 32 != 0 {
        return fail_seg(Check::BaseHigh, Seg::Cs, cs.base);
    }
    for s in [Seg::Ss, Seg::Ds, Seg::Es] {
        let r = g.segment(s);
        if r.usable() && r.base >> 32 != 0 {
            return fail_seg(Check::BaseHigh, s, r.base);
        }
    }
    if v86 {
        return check_system_segments(tr, ldtr, ia32e);
    }
    // Access rights: type.
    let cs_ok = matches!(cs.type_(), 9 | 11 | 13 | 15) || (unrestricted && cs.type_() == 3);
    if !cs_ok {
        return fail_seg(Check::CsType, Seg::Cs, cs.ar.into());
    }
    if ss.usable() && !matches!(ss.type_(), 3 | 7) {
        return fail_seg(Check::SsType, Seg::Ss, ss.ar.into());
    }
    for s in data {
        let r = g.segment(s);
        if r.usable() && r.type_() & 1 == 0 {
            return fail_seg(Check::DataAccessed, s, r.ar.into());
        }
        if r.usable() && r.type_() & 8 != 0 && r.type_() & 2 == 0 {
            return fail_seg(Check::CodeReadable, s, r.ar.into());
        }
    }
    // S, then DPL, then P, reserved bits, L/D, G: for CS always, for the
    // others when usable.
    let checked = |s: Seg| s == Seg::Cs || g.segment(s).usable();
    let six = [Seg::Cs, Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs];
    if let Some(s) = six.iter().copied().find(|s| checked(*s) && g.segment(*s).ar & AR_S == 0) {
        return fail_seg(Check::SegS, s, g.segment(s).ar.into());
    }
    match cs.type_() {
        3 if cs.dpl() != 0 => return fail_seg(Check::CsDplData, Seg::Cs, cs.ar.into()),
        9 | 11 if cs.dpl() != ss.dpl() => return fail_seg(Check::CsDplNonConforming, Seg::Cs, cs.ar.into()),
        13 | 15 if cs.dpl() > ss.dpl() => return fail_seg(Check::CsDplConforming, Seg::Cs, cs.ar.into()),
        _ => {}
    }
    if !unrestricted && ss.dpl() != ss.rpl() {
        return fail_seg(Check::SsDplRpl, Seg::Ss, ss.ar.into());
    }
    if (cs.type_() == 3 || g.cr0 & CR0_PE == 0) && ss.dpl() != 0 {
        return fail_seg(Check::SsDplRealMode, Seg::Ss, ss.ar.into());
    }
    if !unrestricted {
        for s in data {
            let r = g.segment(s);
            if r.usable() && r.type_() <= 11 && r.dpl() < r.rpl() {
                return fail_seg(Check::DataDplRpl, s, r.ar.into());
            }
        }
    }
    if let Some(s) = six.iter().copied().find(|s| checked(*s) && g.segment(*s).ar & AR_P == 0) {
        return fail_seg(Check::SegPresent, s, g.segment(s).ar.into());
    }
    if let Some(s) = six.iter().copied().find(|s| checked(*s) && g.segment(*s).ar & AR_RESERVED != 0) {
        return fail_seg(Check::SegReserved, s, g.segment(s).ar.into());
    }
    if ia32e && cs.ar & AR_L != 0 && cs.ar & AR_DB != 0 {
        return fail_seg(Check::CsLongAndDb, Seg::Cs, cs.ar.into());
    }
    if let Some(s) = six.iter().copied().find(|s| checked(*s) && !granularity_ok(g.segment(*s))) {
        return fail_seg(Check::Granularity, s, g.segment(s).limit.into());
    }
    check_system_segments(tr, ldtr, ia32e)
}

/// §27.3.1.2, TR and LDTR access rights.
fn check_system_segments(tr: &Segment, ldtr: &Segment, ia32e: bool) -> Option<Violation> {
    // The SDM lists "usable" after type, S, P and G; an unusable TR breaks
    // those too, and this name says why.
    if !tr.usable() {
        return fail_seg(Check::TrUnusable, Seg::Tr, tr.ar.into());
    }
    if !(tr.type_() == 11 || (tr.type_() == 3 && !ia32e)) {
        return fail_seg(Check::TrType, Seg::Tr, tr.ar.into());
    }
    if tr.ar & AR_S != 0 {
        return fail_seg(Check::TrSystem, Seg::Tr, tr.ar.into());
    }
    if tr.ar & AR_P == 0 {
        return fail_seg(Check::TrPresent, Seg::Tr, tr.ar.into());
    }
    if !granularity_ok(tr) {
        return fail_seg(Check::Granularity, Seg::Tr, tr.limit.into());
    }
    if tr.ar & AR_RESERVED != 0 {
        return fail_seg(Check::SegReserved, Seg::Tr, tr.ar.into());
    }
    if ldtr.usable() {
        if ldtr.type_() != 2 || ldtr.ar & AR_S != 0 || ldtr.ar & AR_P == 0 {
            return fail_seg(Check::LdtrType, Seg::Ldtr, ldtr.ar.into());
        }
        if ldtr.ar & AR_RESERVED != 0 {
            return fail_seg(Check::SegReserved, Seg::Ldtr, ldtr.ar.into());
        }
        if !granularity_ok(ldtr) {
            return fail_seg(Check::Granularity, Seg::Ldtr, ldtr.limit.into());
        }
    }
    None
}

/// §27.3.1.3: GDTR and IDTR.
fn check_tables(g: &Guest, cpu: &Cpu) -> Option<Violation> {
    for b in [g.gdtr_base, g.idtr_base] {
        if !canonical(b, cpu.linear_bits) {
            return fail(Check::TableCanonical, b);
        }
    }
    for l in [g.gdtr_limit, g.idtr_limit] {
        if l >> 16 != 0 {
            return fail(Check::TableLimit, l.into());
        }
    }
    None
}

/// §27.3.1.4: RIP and RFLAGS.
fn check_rip_rflags(g: &Guest, c: &Controls, cpu: &Cpu, ia32e: bool) -> Option<Violation> {
    let long64 = ia32e && g.segment(Seg::Cs).ar & AR_L != 0;
    if !long64 && g.rip >> 32 != 0 {
        return fail(Check::RipHigh, g.rip);
    }
    if long64 && !canonical(g.rip, cpu.linear_bits) {
        return fail(Check::RipCanonical, g.rip);
    }
    if g.rflags & RFLAGS_RESERVED != 0 || g.rflags & 2 == 0 {
        return fail(Check::RflagsReserved, g.rflags);
    }
    if g.rflags & RFLAGS_VM != 0 && (ia32e || g.cr0 & CR0_PE == 0) {
        return fail(Check::RflagsVm, g.rflags);
    }
    let info = c.entry_intr_info;
    if info & (1 << 31) != 0 && (info >> 8) & 7 == EVENT_EXTERNAL && g.rflags & RFLAGS_IF == 0 {
        return fail(Check::RflagsIfForInterrupt, g.rflags);
    }
    None
}

/// §27.3.1.5: activity and interruptibility state, pending debug
/// exceptions, VMCS link pointer.
fn check_non_register(g: &Guest, c: &Controls, cpu: &Cpu) -> Option<Violation> {
    let act = g.activity;
    // IA32_VMX_MISC bits 6, 7, 8: HLT, shutdown, wait-for-SIPI supported.
    let supported = act == 0 || (act <= 3 && cpu.misc & (1 << (5 + act)) != 0);
    if !supported {
        return fail(Check::ActivityState, act.into());
    }
    if act == ACTIVITY_HLT && g.segment(Seg::Ss).dpl() != 0 {
        return fail(Check::HltWithSsDpl, g.segment(Seg::Ss).ar.into());
    }
    let intr = g.interruptibility;
    if intr & (INTR_STI | INTR_MOV_SS) != 0 && act != 0 {
        return fail(Check::ActivityWithBlocking, act.into());
    }
    let info = c.entry_intr_info;
    let injecting = info & (1 << 31) != 0;
    let (ty, vector) = ((info >> 8) & 7, info & 0xff);
    if injecting && (act == ACTIVITY_SIPI || (act == ACTIVITY_SHUTDOWN && ty != EVENT_NMI && !(ty == EVENT_HW_EXCEPTION && vector == 18))) {
        return fail(Check::ActivityForEvent, act.into());
    }
    if intr >> 5 != 0 {
        return fail(Check::InterruptibilityReserved, intr.into());
    }
    if intr & INTR_STI != 0 && intr & INTR_MOV_SS != 0 {
        return fail(Check::StiAndMovSs, intr.into());
    }
    if intr & INTR_STI != 0 && g.rflags & RFLAGS_IF == 0 {
        return fail(Check::StiWithoutIf, intr.into());
    }
    if injecting && ty == EVENT_EXTERNAL && intr & (INTR_STI | INTR_MOV_SS) != 0 {
        return fail(Check::BlockingForInterrupt, intr.into());
    }
    if injecting && ty == EVENT_NMI && intr & (INTR_STI | INTR_MOV_SS) != 0 {
        return fail(Check::BlockingForNmi, intr.into());
    }
    if intr & INTR_SMI != 0 && !g.in_smm {
        return fail(Check::SmiBlocking, intr.into());
    }
    if c.entry & entry::ENTRY_TO_SMM != 0 && intr & INTR_SMI == 0 {
        return fail(Check::SmiBlocking, intr.into());
    }
    if injecting && ty == EVENT_NMI && c.pin & pin::VIRTUAL_NMIS != 0 && intr & INTR_NMI != 0 {
        return fail(Check::NmiBlockingForNmi, intr.into());
    }
    let pd = g.pending_dbg;
    if pd & (0xff0 | (1 << 13) | (1 << 15) | !0x1_ffff) != 0 {
        return fail(Check::PendingDbgReserved, pd);
    }
    // A single step pending over an instruction that blocks events: the
    // CPU wants the BS bit to say so (the classic trap for a VMM that
    // skips an instruction with RFLAGS.TF set under STI blocking).
    if intr & (INTR_STI | INTR_MOV_SS) != 0 || act == ACTIVITY_HLT {
        let btf = g.debugctl & 2 != 0;
        let tf = g.rflags & RFLAGS_TF != 0;
        let bs = pd & (1 << 14) != 0;
        if (tf && !btf && !bs) || ((!tf || btf) && bs) {
            return fail(Check::PendingDbgBs, pd);
        }
    }
    if g.link_pointer != u64::MAX {
        return fail(Check::LinkPointer, g.link_pointer);
    }
    None
}

/// §27.3.1.6: the PDPTEs a PAE-paging guest enters with (EPT on).
fn check_pdptes(g: &Guest, cpu: &Cpu, ept: bool, ia32e: bool) -> Option<Violation> {
    if !ept || ia32e || g.cr0 & CR0_PG == 0 || g.cr4 & CR4_PAE == 0 {
        return None;
    }
    let reserved = 0x1e6 | if cpu.maxphyaddr >= 64 { 0 } else { !0u64 << cpu.maxphyaddr };
    g.pdpte.iter().copied().find(|p| p & 1 != 0 && p & reserved != 0).and_then(|p| fail(Check::Pdpte, p))
}

/// What rvmx knows of a failed VM entry, to check the VMCS against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// VMfailValid with VM-instruction error 7: an invalid control field.
    Control,
    /// VMfailValid with VM-instruction error 8: an invalid host-state field.
    HostState,
    /// Exit reason 33: invalid guest state.
    GuestState,
}

/// The first rule the VMCS breaks for this kind of failure. `None` means
/// no rule written here is broken: the CPU checks something this file
/// does not know (a model-specific check, or an emulator's own rule).
pub(crate) fn explain(f: Failure, g: &Guest, h: &Host, c: &Controls, cpu: &Cpu) -> Option<Violation> {
    match f {
        Failure::Control => check_controls(c, cpu, g.cr0),
        Failure::HostState => check_host(h, c, cpu),
        Failure::GuestState => check_guest(g, c, cpu).or_else(|| emulator_rule(g)),
    }
}

/// A guest state that no SDM rule forbids but that Bochs 2.7 (the
/// emulated machine of rvmx's tests) refuses: its VMX code compared CS's
/// selector RPL with CS's own DPL. Real mode code that far-jumps to a
/// segment whose number has low bits set (CS = 0x1235, DPL 0) is the
/// usual way to meet it.
fn emulator_rule(g: &Guest) -> Option<Violation> {
    let cs = g.segment(Seg::Cs);
    let broken = match cs.type_() {
        9 | 11 => cs.rpl() != cs.dpl(),
        13 | 15 => cs.rpl() < cs.dpl(),
        _ => false,
    };
    if broken {
        fail_seg(Check::Bochs27CsRpl, Seg::Cs, cs.selector.into())
    } else {
        None
    }
}
