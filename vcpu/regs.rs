// SPDX-License-Identifier: GPL-2.0

//! The vCPU's register ioctls: KVM_GET/SET_REGS, KVM_GET/SET_SREGS,
//! KVM_GET/SET_MSRS, KVM_SET/GET_CPUID2 and KVM_SET_SIGNAL_MASK. Each takes
//! the run token, so it never races a running KVM_RUN.

use super::*;
use crate::vmcs::intr::kind;

impl Vcpu {
    /// KVM_GET_REGS.
    pub(crate) fn get_regs(&self) -> Result<kvm_regs> {
        let mut t = self.token()?;
        let st = t.state();
        let r = st.regs;
        let v = st.vmcs.load()?;
        Ok(kvm_regs {
            rax: r[0], rcx: r[1], rdx: r[2], rbx: r[3],
            rsp: v.read(GUEST_RSP).0, rbp: r[5], rsi: r[6], rdi: r[7],
            r8: r[8], r9: r[9], r10: r[10], r11: r[11],
            r12: r[12], r13: r[13], r14: r[14], r15: r[15],
            rip: v.read(GUEST_RIP).0, rflags: v.read(GUEST_RFLAGS).0,
        })
    }

    /// KVM_SET_REGS.
    pub(crate) fn set_regs(&self, n: &kvm_regs) -> Result {
        let mut t = self.token()?;
        let st = t.state();
        st.regs = [
            n.rax, n.rcx, n.rdx, n.rbx, 0, n.rbp, n.rsi, n.rdi,
            n.r8, n.r9, n.r10, n.r11, n.r12, n.r13, n.r14, n.r15,
        ];
        let mut v = st.vmcs.load()?;
        // A VMM that reads and writes back the registers while it handles
        // an exit (QEMU does, for some devices) leaves RIP where it was: the
        // instruction the exit left open is still completed at the next
        // KVM_RUN (an IN's data, an MMIO read), as KVM completes it when the
        // linear RIP is unchanged (x86.c complete_fast_pio_in). New
        // registers elsewhere abandon it.
        if n.rip != v.read(GUEST_RIP).0 {
            st.pending = Pending::None;
            st.rip_advance = 0;
        }
        v.write(GUEST_RSP, Natural(n.rsp))?;
        v.write(GUEST_RIP, Natural(n.rip))?;
        v.write(GUEST_RFLAGS, Natural(n.rflags | RFLAGS_FIXED))
    }

    /// KVM_GET_SREGS.
    pub(crate) fn get_sregs(&self) -> Result<kvm_sregs> {
        let mut t = self.token()?;
        let st = t.state();
        let cr2 = st.cr2;
        let (cr8, apic_base, irq) = (st.guest.cr8, st.guest.msrs.apic_base, st.guest.irq);
        let v = st.vmcs.load()?;
        // SAFETY: all-zero is a valid `kvm_sregs` (plain integers).
        let mut s: kvm_sregs = unsafe { core::mem::zeroed() };
        s.cs = read_seg(&v, &GUEST_CS);
        s.ds = read_seg(&v, &GUEST_DS);
        s.es = read_seg(&v, &GUEST_ES);
        s.fs = read_seg(&v, &GUEST_FS);
        s.gs = read_seg(&v, &GUEST_GS);
        s.ss = read_seg(&v, &GUEST_SS);
        s.tr = read_seg(&v, &GUEST_TR);
        s.ldt = read_seg(&v, &GUEST_LDTR);
        s.gdt.base = v.read(GUEST_GDTR_BASE).0;
        // CAST: descriptor-table limits are 16 bits.
        s.gdt.limit = v.read(GUEST_GDTR_LIMIT) as u16;
        s.idt.base = v.read(GUEST_IDTR_BASE).0;
        s.idt.limit = v.read(GUEST_IDTR_LIMIT) as u16;
        s.cr0 = v.guest_cr0();
        s.cr2 = cr2;
        s.cr3 = v.read(GUEST_CR3).0;
        s.cr4 = v.guest_cr4();
        s.efer = v.read(GUEST_IA32_EFER);
        s.cr8 = cr8;
        s.apic_base = apic_base;
        // A queued, not yet injected interrupt is reported here, as KVM does.
        if let Some(vector) = irq {
            s.interrupt_bitmap[usize::from(vector / 64)] |= 1 << (vector % 64);
        }
        Ok(s)
    }

    /// KVM_SET_SREGS, refusing what KVM's kvm_valid_sregs() refuses.
    pub(crate) fn set_sregs(&self, s: &kvm_sregs) -> Result {
        let caps = vmxon::caps().ok_or(EIO)?;
        // The same rules as a MOV to CR0/CR4 (hw/cr.rs).
        if !sregs_valid(s.cr0, s.cr4, s.efer, caps.cr4_fixed1) {
            return Err(EINVAL);
        }
        let long = s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0;
        // 32-bit PAE paging: the PDPTEs come from guest memory now, as
        // KVM loads them (invalid ones: EINVAL).
        let pdptes = if s.cr0 & CR0_PG != 0 && s.cr4 & CR4_PAE != 0 && !long {
            Some(self.vm.read_pdptes(s.cr3).ok().flatten().ok_or(EINVAL)?)
        } else {
            None
        };
        if s.cr8 >> 4 != 0 || s.apic_base & 0xfff0_0000_0000_02ff != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let st = t.state();
        st.cr2 = s.cr2;
        st.guest.cr8 = s.cr8;
        st.guest.msrs.apic_base = s.apic_base;
        // The first set bit of interrupt_bitmap, if any, is queued as an
        // interrupt, as KVM's __set_sregs_common does (none: no change).
        if let Some((i, w)) = s.interrupt_bitmap.iter().enumerate().find(|(_, w)| **w != 0) {
            // CAST: at most 4 * 64 = 256 vectors.
            st.guest.irq = Some((i * 64 + w.trailing_zeros() as usize) as u8);
        }
        // New paging registers: cached translations of the old ones must go.
        st.flush_tlb = true;
        let mut v = st.vmcs.load()?;
        write_seg(&mut v, &GUEST_CS, &s.cs)?;
        write_seg(&mut v, &GUEST_DS, &s.ds)?;
        write_seg(&mut v, &GUEST_ES, &s.es)?;
        write_seg(&mut v, &GUEST_FS, &s.fs)?;
        write_seg(&mut v, &GUEST_GS, &s.gs)?;
        write_seg(&mut v, &GUEST_SS, &s.ss)?;
        write_seg(&mut v, &GUEST_TR, &s.tr)?;
        write_seg(&mut v, &GUEST_LDTR, &s.ldt)?;
        v.write(GUEST_GDTR_BASE, Natural(s.gdt.base))?;
        v.write(GUEST_GDTR_LIMIT, u32::from(s.gdt.limit))?;
        v.write(GUEST_IDTR_BASE, Natural(s.idt.base))?;
        v.write(GUEST_IDTR_LIMIT, u32::from(s.idt.limit))?;
        v.write(GUEST_CR3, Natural(s.cr3))?;
        set_cr0(&mut v, &caps, s.cr0)?;
        set_cr4(&mut v, &caps, s.cr4)?;
        if let Some(p) = pdptes {
            write_pdptes(&mut v, &p)?;
        }
        v.write(GUEST_IA32_EFER, s.efer)?;
        // An exception already queued (KVM_SET_VCPU_EVENTS) follows the new
        // CR0.PE: with or without its error code (exits::exception_info).
        let pending = v.read(ENTRY_INTR_INFO);
        if pending.is(kind::HARDWARE_EXCEPTION) {
            let code = pending.has_error_code().then(|| v.read(ENTRY_EXCEPTION_ERROR_CODE));
            let (info, code) = exits::exception_info(pending.vector(), code, s.cr0);
            if let Some(c) = code {
                v.write(ENTRY_EXCEPTION_ERROR_CODE, c)?;
            }
            v.write(ENTRY_INTR_INFO, info)?;
        }
        set_long_mode(&mut v, s.efer & EFER_LMA != 0)
    }

    /// KVM_GET_MSRS: fills `entries` in order, stopping at the first MSR the
    /// guest does not have; returns how many were read.
    pub(crate) fn get_msrs(&self, entries: &mut [uapi::kvm_msr_entry]) -> Result<usize> {
        let mut t = self.token()?;
        let st = t.state();
        let msrs = &st.guest.msrs;
        let v = st.vmcs.load()?;
        for (n, e) in entries.iter_mut().enumerate() {
            match msrs.get(&v, e.index, false) {
                Some(val) => e.data = val,
                None => return Ok(n),
            }
        }
        Ok(entries.len())
    }

    /// KVM_SET_MSRS: writes `entries` in order, stopping at the first one
    /// refused; returns how many were written.
    pub(crate) fn set_msrs(&self, entries: &[uapi::kvm_msr_entry]) -> Result<usize> {
        let mut t = self.token()?;
        let st = t.state();
        let msrs = &mut st.guest.msrs;
        let mut v = st.vmcs.load()?;
        for (n, e) in entries.iter().enumerate() {
            if msrs.set(&mut v, e.index, e.data, false, true).is_err() {
                return Ok(n);
            }
        }
        Ok(entries.len())
    }

    /// KVM_X86_SETUP_MCE: the guest's machine-check capabilities
    /// (msrs/emulated.rs); EINVAL for what KVM refuses.
    pub(crate) fn setup_mce(&self, mcg_cap: u64) -> Result {
        let mut t = self.token()?;
        t.state().guest.msrs.setup_mce(mcg_cap).map_err(|_| EINVAL)
    }

    /// KVM_SET_CPUID2: the table the guest's CPUID reads from now on. After
    /// the first KVM_RUN only the same table is accepted (EINVAL otherwise,
    /// as KVM's kvm_cpuid_check_equal answers): changing CPUID under a
    /// running guest is unsound.
    pub(crate) fn set_cpuid(&self, table: KVec<kvm_cpuid_entry2>) -> Result {
        let mut t = self.token()?;
        let st = t.state();
        if st.ran {
            let same = st.guest.cpuid.len() == table.len()
                && st.guest.cpuid.iter().zip(table.iter()).all(|(a, b)| {
                    (a.function, a.index, a.flags, a.eax, a.ebx, a.ecx, a.edx)
                        == (b.function, b.index, b.flags, b.eax, b.ebx, b.ecx, b.edx)
                });
            return if same { Ok(()) } else { Err(EINVAL) };
        }
        st.guest.cpuid = table;
        Ok(())
    }

    /// KVM_GET_CPUID2: a copy of the table KVM_SET_CPUID2 set.
    pub(crate) fn get_cpuid(&self) -> Result<KVec<kvm_cpuid_entry2>> {
        let mut t = self.token()?;
        let st = t.state();
        let mut out = KVec::with_capacity(st.guest.cpuid.len(), GFP_KERNEL)?;
        for e in st.guest.cpuid.iter() {
            out.push(*e, GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// KVM_SET_SIGNAL_MASK: the signals blocked while KVM_RUN runs (None:
    /// the thread's own mask).
    pub(crate) fn set_signal_mask(&self, mask: Option<u64>) -> Result {
        let mut t = self.token()?;
        t.state().sigmask = mask;
        Ok(())
    }
}
