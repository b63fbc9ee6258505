// SPDX-License-Identifier: GPL-2.0

//! `/dev/rvmx`: the system ioctls, in the numbers and semantics of KVM's
//! `/dev/kvm` (include/uapi/linux/kvm.h, Documentation/virt/kvm/api.rst).
//! This is the only place that parses ioctl numbers; `uapi/rvmx.h` lists
//! what is implemented.

use kernel::{ioctl::_IO, prelude::*};

/// KVM's ioctl type byte.
const KVMIO: u32 = 0xAE;
/// The KVM API version rvmx implements a subset of (api.rst §4.1).
pub(crate) const KVM_API_VERSION: i32 = 12;
/// `KVM_GET_API_VERSION`: returns `KVM_API_VERSION`; the argument must be 0.
const KVM_GET_API_VERSION: u32 = _IO(KVMIO, 0x00);

fn dev_ioctl(cmd: u32, arg: usize) -> Result<i32> {
    match cmd {
        KVM_GET_API_VERSION if arg != 0 => Err(EINVAL),
        KVM_GET_API_VERSION => Ok(KVM_API_VERSION),
        // Not (yet) implemented: say so in the way userspace expects of an
        // ioctl a driver does not know.
        _ => Err(ENOTTY),
    }
}

/// `unlocked_ioctl` of /dev/rvmx (the file operations live in kglue.c).
#[no_mangle]
extern "C" fn rvmx_dev_ioctl(
    _file: *mut kernel::bindings::file,
    cmd: core::ffi::c_uint,
    arg: core::ffi::c_ulong,
) -> core::ffi::c_long {
    // CAST: `unsigned long` and `usize` have the same width on x86-64.
    match dev_ioctl(cmd, arg as usize) {
        Ok(v) => v.into(),
        Err(e) => e.to_errno().into(),
    }
}

extern "C" {
    fn rvmx_glue_misc_register() -> core::ffi::c_int;
    fn rvmx_glue_misc_deregister();
}

/// The registered `/dev/rvmx` misc device; deregistered on drop.
pub(crate) struct RvmxDevice(());

impl RvmxDevice {
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: registers kglue.c's static miscdevice; paired with the
        // deregistration in `drop`.
        kernel::error::to_result(unsafe { rvmx_glue_misc_register() })?;
        Ok(Self(()))
    }
}

impl Drop for RvmxDevice {
    fn drop(&mut self) {
        // SAFETY: `self` exists only after a successful registration.
        unsafe { rvmx_glue_misc_deregister() };
    }
}
