// SPDX-License-Identifier: GPL-2.0

//! VMCALL (reason 18): the guest calls its hypervisor. rvmx hands every
//! hypercall to userspace as KVM_EXIT_HYPERCALL: nr from RAX, args from
//! RBX, RCX, RDX, RSI (KVM's hypercall registers), then RDI and R8; the
//! value userspace puts in `hypercall.ret` is the guest's RAX when it
//! resumes, past the VMCALL. (KVM answers unknown hypercalls itself with
//! -KVM_ENOSYS; this difference is listed in the README.)

use super::{Action, ExitCtx, Pending};
use crate::guest::reg;
use crate::vmcs::{controls, fields::*};
use kernel::prelude::*;

/// KVM_EXIT_HYPERCALL_LONG_MODE (_BITULL(0) in linux/kvm.h; bindgen cannot
/// evaluate the macro).
const KVM_EXIT_HYPERCALL_LONG_MODE: u64 = 1 << 0;

pub(crate) fn vmcall(ctx: &mut ExitCtx<'_, '_>) -> Result<Action> {
    let long = ctx.vmcs.read(ENTRY_CONTROLS) & controls::entry::IA32E_MODE_GUEST != 0
        && ctx.vmcs.read(GUEST_CS_AR) & (1 << 13) != 0;
    let r = &*ctx.regs;
    let args = [r[reg::RBX], r[reg::RCX], r[reg::RDX], r[reg::RSI], r[reg::RDI], r[8]];
    ctx.run.exit_hypercall(r[reg::RAX], args, u64::from(long) * KVM_EXIT_HYPERCALL_LONG_MODE);
    *ctx.pending = Pending::Hypercall;
    ctx.skip_instruction()?;
    Ok(Action::ToUser)
}
