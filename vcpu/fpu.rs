// SPDX-License-Identifier: GPL-2.0

//! The guest's FPU, SSE and AVX state as the VMM sees it: KVM_GET/SET_FPU
//! (the x87 and SSE registers, from the legacy region of the guest's XSAVE
//! image), KVM_GET/SET_XSAVE (the whole image) and KVM_GET/SET_XCRS
//! (XCR0). The image itself is loaded and saved around each guest section
//! (vcpu/run.rs); exits/xsetbv.rs handles the guest's own XSETBV.

use super::Vcpu;
use crate::exits;
use crate::uapi;
use kernel::prelude::*;

/// The MXCSR bits a guest may set (the rest are reserved: LDMXCSR and
/// XRSTOR fault on them). Bit 6 (DAZ) exists on every x86-64 CPU rvmx
/// supports.
const MXCSR_VALID: u32 = 0xffff;

impl Vcpu {
    /// KVM_GET_FPU: the x87 and SSE state, from the legacy (FXSAVE-format)
    /// region at the start of the guest's XSAVE image.
    pub(crate) fn get_fpu(&self) -> Result<uapi::kvm_fpu> {
        let mut t = self.token()?;
        let img = t.state().fpu.as_ptr::<u8>();
        let mut f = uapi::kvm_fpu::default();
        // SAFETY: the image is a page we own; the offsets are those of the
        // FXSAVE layout (SDM Vol. 1 §10.5.1), all within its first 512 bytes.
        unsafe {
            let rd16 = |o: usize| img.add(o).cast::<u16>().read_unaligned();
            let rd64 = |o: usize| img.add(o).cast::<u64>().read_unaligned();
            f.fcw = rd16(0);
            f.fsw = rd16(2);
            f.ftwx = *img.add(4);
            f.last_opcode = rd16(6);
            f.last_ip = rd64(8);
            f.last_dp = rd64(16);
            f.mxcsr = img.add(24).cast::<u32>().read_unaligned();
            core::ptr::copy_nonoverlapping(img.add(32), f.fpr.as_mut_ptr().cast::<u8>(), 128);
            core::ptr::copy_nonoverlapping(img.add(160), f.xmm.as_mut_ptr().cast::<u8>(), 256);
        }
        Ok(f)
    }

    /// KVM_SET_FPU: the inverse of `get_fpu`; marks x87 and SSE state as
    /// present in the image's header, so the next XRSTOR loads them. An
    /// MXCSR with reserved bits set is EINVAL (XRSTOR would fault on it).
    pub(crate) fn set_fpu(&self, f: &uapi::kvm_fpu) -> Result {
        if f.mxcsr & !MXCSR_VALID != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let img = t.state().fpu.as_ptr::<u8>();
        // SAFETY: as in `get_fpu`; XSTATE_BV is at offset 512.
        unsafe {
            let wr16 = |o: usize, v: u16| img.add(o).cast::<u16>().write_unaligned(v);
            let wr64 = |o: usize, v: u64| img.add(o).cast::<u64>().write_unaligned(v);
            wr16(0, f.fcw);
            wr16(2, f.fsw);
            *img.add(4) = f.ftwx;
            wr16(6, f.last_opcode);
            wr64(8, f.last_ip);
            wr64(16, f.last_dp);
            img.add(24).cast::<u32>().write_unaligned(f.mxcsr);
            core::ptr::copy_nonoverlapping(f.fpr.as_ptr().cast::<u8>(), img.add(32), 128);
            core::ptr::copy_nonoverlapping(f.xmm.as_ptr().cast::<u8>(), img.add(160), 256);
            let bv = img.add(512).cast::<u64>();
            bv.write(bv.read() | 3);
        }
        Ok(())
    }

    /// KVM_GET_XSAVE: the guest's XSAVE image, in the standard (not
    /// compacted) format, as XSAVE stored it.
    pub(crate) fn get_xsave(&self, out: &mut uapi::kvm_xsave) -> Result {
        let mut t = self.token()?;
        // SAFETY: both are 4096 bytes; the image is ours.
        unsafe { core::ptr::copy_nonoverlapping(t.state().fpu.as_ptr::<u8>(), out.region.as_mut_ptr().cast::<u8>(), 4096) };
        Ok(())
    }

    /// KVM_SET_XSAVE, with the checks XRSTOR itself would make (a header
    /// with components the host does not enable, a compacted image, non-zero
    /// reserved header bytes, a bad MXCSR: EINVAL), so that loading the
    /// image can never fault.
    pub(crate) fn set_xsave(&self, x: &uapi::kvm_xsave) -> Result {
        let b = |o: usize| u64::from(x.region[o / 4]) | u64::from(x.region[o / 4 + 1]) << 32;
        let (xstate_bv, xcomp_bv) = (b(512), b(520));
        let reserved_clear = (528..576).step_by(8).all(|o| b(o) == 0);
        let mut t = self.token()?;
        let st = t.state();
        if xstate_bv & !st.guest.xfeatures != 0 || xcomp_bv != 0 || !reserved_clear || x.region[6] & !MXCSR_VALID != 0 {
            return Err(EINVAL);
        }
        // SAFETY: both are 4096 bytes; the image is ours.
        unsafe { core::ptr::copy_nonoverlapping(x.region.as_ptr().cast::<u8>(), st.fpu.as_ptr::<u8>(), 4096) };
        Ok(())
    }

    /// KVM_GET_XCRS: XCR0, the only extended control register.
    pub(crate) fn get_xcrs(&self) -> Result<uapi::kvm_xcrs> {
        let mut t = self.token()?;
        let mut x = uapi::kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        x.xcrs[0].value = t.state().guest.xcr0;
        Ok(x)
    }

    /// KVM_SET_XCRS: XCR0 from the first entry naming it (KVM's checks:
    /// at most 16 entries, no flags, a value XSETBV would accept).
    pub(crate) fn set_xcrs(&self, x: &uapi::kvm_xcrs) -> Result {
        if x.nr_xcrs as usize > x.xcrs.len() || x.flags != 0 {
            return Err(EINVAL);
        }
        let mut t = self.token()?;
        let g = &mut t.state().guest;
        if let Some(e) = x.xcrs[..x.nr_xcrs as usize].iter().find(|e| e.xcr == 0) {
            if !exits::xsetbv::valid_xcr0(e.value, g.xfeatures) {
                return Err(EINVAL);
            }
            g.xcr0 = e.value;
        }
        Ok(())
    }
}
