// SPDX-License-Identifier: GPL-2.0

//! I/O instructions (reason 30): rvmx sets "unconditional I/O exiting", so
//! every IN and OUT exits, and is handed to userspace as KVM_EXIT_IO with
//! KVM's layout: the data at `data_offset` from the start of kvm_run (the
//! port-I/O page). For OUT the data is copied there before the exit; for IN
//! userspace writes it there and the next KVM_RUN moves it into RAX.
//! Exit qualification (SDM Vol. 3C, table 28-5): bits 2:0 size - 1, bit 3
//! direction (1 = IN), bit 4 string (INS/OUTS), bit 5 REP, bits 31:16 port.

use super::{Action, ExitCtx, Pending};
use crate::uapi;
use crate::vcpu::reg;
use crate::vmcs::fields::*;
use kernel::prelude::*;

pub(crate) fn io_instruction(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let q = ctx.vmcs.read(EXIT_QUALIFICATION).0;
    // CAST: 3-bit size field, 16-bit port field.
    let size = ((q & 7) + 1) as u8;
    let is_in = q & (1 << 3) != 0;
    let port = (q >> 16) as u16;
    if q & (1 << 4) != 0 {
        // INS/OUTS move data between the port and guest memory: not yet.
        return Ok(ctx.internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, 30));
    }
    if is_in {
        *ctx.pending = Pending::PioIn { size };
    } else {
        let data = ctx.regs[reg::RAX].to_le_bytes();
        // SAFETY: the PIO page is ours and holds at least 4 bytes.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), ctx.pio, usize::from(size)) };
    }
    // SAFETY: plain stores to the run page's `io` member.
    unsafe {
        let io = &mut (*ctx.run).__bindgen_anon_1.io;
        io.direction = if is_in { uapi::KVM_EXIT_IO_IN } else { uapi::KVM_EXIT_IO_OUT } as u8;
        io.size = size;
        io.port = port;
        io.count = 1;
        io.data_offset = 4096 * u64::from(uapi::KVM_PIO_PAGE_OFFSET);
    }
    ctx.skip_instruction()?;
    Ok(ctx.exit_to_user(uapi::KVM_EXIT_IO))
}
