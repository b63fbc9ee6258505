// SPDX-License-Identifier: GPL-2.0

//! Exit qualifications: the VMCS field (EXIT_QUALIFICATION) whose meaning
//! depends on the exit reason, one type per reason that has one (SDM Vol.
//! 3C §28.2.1, tables 28-3 to 28-7). A handler reads the raw field once
//! and wraps it, so that every bit it looks at has a name here.
//!
//! Pure: no kernel dependency, so that the launcher (samples/rvmx-run,
//! `--trace`) decodes qualifications with this same code, and the unit
//! tests check it on the build machine.

/// I/O instruction (reason 30, table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IoQual(pub(crate) u64);

impl IoQual {
    /// Access size in bytes: 1, 2 or 4 (bits 2:0 hold size - 1).
    pub(crate) fn size(self) -> u8 {
        // CAST: a 3-bit field plus one.
        ((self.0 & 7) + 1) as u8
    }
    /// Bit 3: IN (or INS); clear for OUT (OUTS).
    pub(crate) fn is_in(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Bit 4: a string instruction (INS/OUTS).
    pub(crate) fn string(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bit 5: with a REP prefix.
    pub(crate) fn rep(self) -> bool {
        self.0 & (1 << 5) != 0
    }
    /// Bit 6: the port was an immediate operand (else DX).
    #[allow(dead_code)] // For readers and the unit tests: no handler needs it.
    pub(crate) fn immediate(self) -> bool {
        self.0 & (1 << 6) != 0
    }
    /// Bits 31:16: the port.
    pub(crate) fn port(self) -> u16 {
        // CAST: a 16-bit field.
        (self.0 >> 16) as u16
    }
}

/// What a control-register access did (bits 5:4 of table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrAccess {
    MovTo,
    MovFrom,
    Clts,
    Lmsw,
}

/// Control-register access (reason 28, table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CrQual(pub(crate) u64);

impl CrQual {
    /// Bits 3:0: the control register (0, 3, 4 or 8).
    pub(crate) fn cr(self) -> u64 {
        self.0 & 15
    }
    pub(crate) fn access(self) -> CrAccess {
        match (self.0 >> 4) & 3 {
            0 => CrAccess::MovTo,
            1 => CrAccess::MovFrom,
            2 => CrAccess::Clts,
            _ => CrAccess::Lmsw,
        }
    }
    /// Bits 11:8: the general-purpose register of a MOV (0 = RAX ... 15).
    pub(crate) fn gpr(self) -> usize {
        // CAST: a 4-bit field.
        ((self.0 >> 8) & 15) as usize
    }
}

/// MOV to or from a debug register (reason 29, table 28-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DrQual(pub(crate) u64);

impl DrQual {
    /// Bits 2:0: the debug register.
    pub(crate) fn dr(self) -> u64 {
        self.0 & 7
    }
    /// Bit 4: MOV from DR, which reads the debug register (else MOV to DR).
    pub(crate) fn reads_dr(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Bits 11:8: the general-purpose register.
    pub(crate) fn gpr(self) -> usize {
        // CAST: a 4-bit field.
        ((self.0 >> 8) & 15) as usize
    }
}

/// EPT violation (reason 48, table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EptQual(pub(crate) u64);

impl EptQual {
    /// Bit 0: a data read.
    #[allow(dead_code)] // The launcher's (--trace).
    pub(crate) fn read(self) -> bool {
        self.0 & 1 != 0
    }
    /// Bit 1: a data write.
    pub(crate) fn write(self) -> bool {
        self.0 & 2 != 0
    }
    /// Bit 2: an instruction fetch.
    pub(crate) fn fetch(self) -> bool {
        self.0 & 4 != 0
    }
    /// Bit 7 set and bit 8 clear: the guest linear address is valid and
    /// the access was the CPU's walk of the guest's page tables while
    /// translating it, not the access to that address itself.
    pub(crate) fn in_page_walk(self) -> bool {
        self.0 & (1 << 7) != 0 && self.0 & (1 << 8) == 0
    }
    /// Bit 12: the access was an IRET that had unblocked NMIs.
    pub(crate) fn nmi_unblocking(self) -> bool {
        self.0 & (1 << 12) != 0
    }
}
