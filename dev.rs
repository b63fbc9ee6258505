// SPDX-License-Identifier: GPL-2.0

//! The ioctl interface, in the numbers and semantics of KVM's
//! (include/uapi/linux/kvm.h, Documentation/virt/kvm/api.rst): `/dev/rvmx`
//! (system ioctls), the VM file descriptor and the vCPU file descriptor.
//! This is the only place that parses ioctl numbers and copies ioctl
//! arguments from and to userspace; `uapi/rvmx.h` lists what is
//! implemented. The file operations themselves are in kglue.c.

use crate::uapi::{self, *};
use crate::vcpu::{self, Vcpu};
use crate::vm::{self, Vm};
use kernel::sync::Arc;
use kernel::{
    prelude::*,
    types::ForeignOwnable,
    uaccess::UserSlice,
};

/// The KVM API version rvmx implements a subset of (api.rst §4.1).
pub(crate) const KVM_API_VERSION: i32 = 12;

extern "C" {
    fn rvmx_glue_misc_register() -> core::ffi::c_int;
    fn rvmx_glue_misc_deregister();
    fn rvmx_glue_vm_fd(vm: *const core::ffi::c_void) -> core::ffi::c_int;
    fn rvmx_glue_vcpu_fd(vcpu: *const core::ffi::c_void) -> core::ffi::c_int;
}

fn to_long(r: Result<i32>) -> core::ffi::c_long {
    match r {
        Ok(v) => v.into(),
        Err(e) => e.to_errno().into(),
    }
}

fn read_arg<T: Default>(arg: usize) -> Result<T> {
    let mut v = T::default();
    let size = core::mem::size_of::<T>();
    // SAFETY: `v` is a plain `#[repr(C)]` ABI struct of `size` bytes for
    // which every bit pattern is valid.
    let bytes = unsafe { core::slice::from_raw_parts_mut((&mut v as *mut T).cast::<u8>(), size) };
    UserSlice::new(arg as _, size).reader().read_slice(bytes)?;
    Ok(v)
}

fn write_arg<T>(arg: usize, v: &T) -> Result {
    let size = core::mem::size_of::<T>();
    // SAFETY: `v` is a plain `#[repr(C)]` ABI struct of `size` bytes with
    // no padding holes (KVM's structs have explicit padding).
    let bytes = unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size) };
    UserSlice::new(arg as _, size).writer().write_slice(bytes)
}

/// KVM_CHECK_EXTENSION: 0 for anything rvmx does not implement.
fn check_extension(cap: usize) -> i32 {
    // CAST: capability numbers are small.
    match cap as u32 {
        KVM_CAP_USER_MEMORY | KVM_CAP_READONLY_MEM | KVM_CAP_IMMEDIATE_EXIT | KVM_CAP_HLT => 1,
        KVM_CAP_NR_MEMSLOTS => vm::MAX_SLOTS as i32,
        KVM_CAP_NR_VCPUS | KVM_CAP_MAX_VCPUS | KVM_CAP_MAX_VCPU_ID => vm::MAX_VCPUS as i32,
        _ => 0,
    }
}

fn dev_ioctl(cmd: u32, arg: usize) -> Result<i32> {
    match cmd {
        uapi::KVM_GET_API_VERSION if arg != 0 => Err(EINVAL),
        uapi::KVM_GET_API_VERSION => Ok(KVM_API_VERSION),
        uapi::KVM_CREATE_VM => {
            // Type 0 (the default VM) is the only one.
            if arg != 0 {
                return Err(EINVAL);
            }
            let vm = Vm::new()?;
            let ptr = vm.into_foreign();
            // SAFETY: on success the fd's private_data owns the reference
            // (released in `rvmx_vm_release`); on failure we take it back.
            let fd = unsafe { rvmx_glue_vm_fd(ptr) };
            if fd < 0 {
                // SAFETY: `ptr` came from `into_foreign` just above.
                drop(unsafe { Arc::<Vm>::from_foreign(ptr) });
                return Err(Error::from_errno(fd));
            }
            Ok(fd)
        }
        uapi::KVM_GET_VCPU_MMAP_SIZE if arg != 0 => Err(EINVAL),
        uapi::KVM_GET_VCPU_MMAP_SIZE => Ok((vcpu::MMAP_PAGES * 4096) as i32),
        uapi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
        // Not implemented: what a driver answers for an ioctl it does not
        // know (KVM answers EINVAL for unknown numbers of its own; see the
        // README).
        _ => Err(ENOTTY),
    }
}

/// `unlocked_ioctl` of /dev/rvmx.
#[no_mangle]
extern "C" fn rvmx_dev_ioctl(
    _file: *mut kernel::bindings::file,
    cmd: core::ffi::c_uint,
    arg: core::ffi::c_ulong,
) -> core::ffi::c_long {
    // CAST: `unsigned long` and `usize` have the same width on x86-64.
    to_long(dev_ioctl(cmd, arg as usize))
}

fn vm_ioctl(vm: &Arc<Vm>, cmd: u32, arg: usize) -> Result<i32> {
    if !vm.is_owner() {
        return Err(EIO);
    }
    match cmd {
        uapi::KVM_SET_USER_MEMORY_REGION => {
            let r: kvm_userspace_memory_region = read_arg(arg)?;
            vm.set_memory_region(&r).map(|()| 0)
        }
        uapi::KVM_CREATE_VCPU => {
            // CAST: KVM takes the id as the ioctl argument.
            let id = u32::try_from(arg).map_err(|_| EINVAL)?;
            vm.add_vcpu_id(id)?;
            let vcpu = match Vcpu::new(vm.clone(), id) {
                Ok(v) => v,
                Err(e) => {
                    vm.remove_vcpu_id(id);
                    return Err(e);
                }
            };
            let ptr = vcpu.into_foreign();
            // SAFETY: as for the VM fd.
            let fd = unsafe { rvmx_glue_vcpu_fd(ptr) };
            if fd < 0 {
                // SAFETY: `ptr` came from `into_foreign` just above.
                drop(unsafe { Arc::<Vcpu>::from_foreign(ptr) });
                return Err(Error::from_errno(fd));
            }
            Ok(fd)
        }
        uapi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
        _ => Err(EINVAL),
    }
}

/// `unlocked_ioctl` of a VM fd.
#[no_mangle]
extern "C" fn rvmx_vm_ioctl(vm: *const core::ffi::c_void, cmd: core::ffi::c_uint, arg: core::ffi::c_ulong) -> core::ffi::c_long {
    // SAFETY: `vm` is the fd's private_data, from `into_foreign`, alive
    // until release, which cannot run during an ioctl.
    let vm = unsafe { Arc::<Vm>::borrow(vm) };
    to_long(vm_ioctl(&vm.into(), cmd, arg as usize))
}

/// `release` of a VM fd: drops the fd's reference (vCPUs hold their own).
#[no_mangle]
extern "C" fn rvmx_vm_release(vm: *const core::ffi::c_void) {
    // SAFETY: the reference the fd owned since `into_foreign`.
    drop(unsafe { Arc::<Vm>::from_foreign(vm) });
}

fn vcpu_ioctl(vcpu: &Vcpu, cmd: u32, arg: usize) -> Result<i32> {
    if !vcpu.vm().is_owner() {
        return Err(EIO);
    }
    match cmd {
        uapi::KVM_RUN if arg != 0 => Err(EINVAL),
        uapi::KVM_RUN => vcpu.run().map(|()| 0),
        uapi::KVM_GET_REGS => write_arg(arg, &vcpu.get_regs()?).map(|()| 0),
        uapi::KVM_SET_REGS => vcpu.set_regs(&read_arg(arg)?).map(|()| 0),
        uapi::KVM_GET_SREGS => write_arg(arg, &vcpu.get_sregs()?).map(|()| 0),
        uapi::KVM_SET_SREGS => vcpu.set_sregs(&read_arg(arg)?).map(|()| 0),
        _ => Err(EINVAL),
    }
}

/// `unlocked_ioctl` of a vCPU fd.
#[no_mangle]
extern "C" fn rvmx_vcpu_ioctl(vcpu: *const core::ffi::c_void, cmd: core::ffi::c_uint, arg: core::ffi::c_ulong) -> core::ffi::c_long {
    // SAFETY: as in `rvmx_vm_ioctl`.
    let vcpu = unsafe { Arc::<Vcpu>::borrow(vcpu) };
    to_long(vcpu_ioctl(&vcpu, cmd, arg as usize))
}

/// `release` of a vCPU fd.
#[no_mangle]
extern "C" fn rvmx_vcpu_release(vcpu: *const core::ffi::c_void) {
    // SAFETY: the reference the fd owned since `into_foreign`.
    let vcpu = unsafe { Arc::<Vcpu>::from_foreign(vcpu) };
    vcpu.vm().remove_vcpu_id(vcpu.id());
}

/// The page behind page `index` of a vCPU mapping (kglue.c's mmap).
#[no_mangle]
extern "C" fn rvmx_vcpu_page(vcpu: *const core::ffi::c_void, index: core::ffi::c_ulong) -> *mut core::ffi::c_void {
    // SAFETY: as in `rvmx_vm_ioctl` (mmap runs with the fd open).
    let vcpu = unsafe { Arc::<Vcpu>::borrow(vcpu) };
    vcpu.mmap_page(index as usize)
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
