// SPDX-License-Identifier: GPL-2.0

//! The ioctl interface, in the numbers and semantics of KVM's
//! (include/uapi/linux/kvm.h, Documentation/virt/kvm/api.rst): `/dev/rvmx`
//! (system ioctls), the VM file descriptor and the vCPU file descriptor.
//! This is the only place that parses ioctl numbers and copies ioctl
//! arguments from and to userspace; `uapi/rvmx.h` lists what is
//! implemented. The file operations themselves are in kglue/files.c.

use crate::kglue::{
    rvmx_glue_current_tgid, rvmx_glue_misc_deregister, rvmx_glue_misc_register,
    rvmx_glue_num_online_cpus, rvmx_glue_vcpu_fd, rvmx_glue_vcpu_stats_fd, rvmx_glue_vm_fd,
    rvmx_glue_vm_stats_fd,
};
use crate::uapi::{self, *};
use crate::vcpu::{self, Vcpu};
use crate::vm::{self, Vm};
use kernel::sync::{Arc, ArcBorrow};
use kernel::{
    prelude::*,
    types::{AsBytes, ForeignOwnable, FromBytes},
    uaccess::UserSlice,
};

/// The KVM API version rvmx implements a subset of (api.rst §4.1).
pub(crate) const KVM_API_VERSION: i32 = 12;

fn to_long(r: Result<i32>) -> core::ffi::c_long {
    match r {
        Ok(v) => v.into(),
        Err(e) => e.to_errno().into(),
    }
}

// Copying ioctl arguments: the ABI structs are marked `FromBytes` (any bit
// pattern is a valid value) and `AsBytes` (no uninitialized padding) in
// uapi/mod.rs, so the kernel's `UserSlice` reader and writer copy them
// safely.

fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg as _, core::mem::size_of::<T>()).reader().read()
}

fn write_arg<T: AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(arg as _, core::mem::size_of::<T>()).writer().write(v)
}

/// As `read_arg`, into a heap allocation: for the 4 KiB `kvm_xsave`, too
/// large to pass through the kernel stack.
fn read_arg_boxed<T: FromBytes>(arg: usize) -> Result<KBox<T>> {
    let mut v = zeroed_box::<T>()?;
    let size = core::mem::size_of::<T>();
    // SAFETY: `v` is a `T` we own, `size` bytes; `T: FromBytes`, so every
    // byte pattern the copy leaves there is a valid `T`.
    let bytes = unsafe { core::slice::from_raw_parts_mut((&mut *v as *mut T).cast::<u8>(), size) };
    UserSlice::new(arg as _, size).reader().read_slice(bytes)?;
    Ok(v)
}

/// A zeroed ABI struct on the heap, never on the stack.
fn zeroed_box<T: FromBytes>() -> Result<KBox<T>> {
    let mut b = KBox::<T>::new_uninit(GFP_KERNEL_ACCOUNT)?;
    // SAFETY: `T: FromBytes`: all-zero bytes are a valid `T`.
    unsafe {
        core::ptr::write_bytes(b.as_mut_ptr(), 0, 1);
        Ok(b.assume_init())
    }
}

/// Reads an array of `n` ABI structs from userspace address `uaddr`.
fn read_array<T: FromBytes>(uaddr: usize, n: usize) -> Result<KVec<T>> {
    let mut reader = UserSlice::new(uaddr as _, n * core::mem::size_of::<T>()).reader();
    let mut v = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
    for _ in 0..n {
        v.push(reader.read()?, GFP_KERNEL_ACCOUNT)?;
    }
    Ok(v)
}

/// Writes an array of ABI structs to userspace address `uaddr`.
fn write_array<T: AsBytes>(uaddr: usize, v: &[T]) -> Result {
    let mut writer = UserSlice::new(uaddr as _, core::mem::size_of_val(v)).writer();
    v.iter().try_for_each(|e| writer.write(e))
}

/// Most MSRs one KVM_GET_MSRS/KVM_SET_MSRS may name (KVM's MAX_IO_MSRS).
const MAX_IO_MSRS: u32 = 256;

/// Hands `obj` to a new anonymous file (kglue/files.c's `rvmx_glue_vm_fd` or
/// `rvmx_glue_vcpu_fd`) and returns its descriptor. The file's
/// private_data then owns the reference, released by the file's `release`
/// (`rvmx_vm_release`, `rvmx_vcpu_release`).
fn install_fd<T: Send + Sync + 'static>(
    obj: Arc<T>,
    glue: unsafe extern "C" fn(*mut core::ffi::c_void) -> core::ffi::c_int,
) -> Result<i32> {
    let ptr = obj.into_foreign();
    // SAFETY: on success the file owns the reference; on failure the glue
    // has not kept `ptr`, and we take the reference back below.
    let fd = unsafe { glue(ptr.cast_mut()) };
    if fd < 0 {
        // SAFETY: `ptr` came from `into_foreign` just above and was not kept.
        drop(unsafe { Arc::<T>::from_foreign(ptr) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd)
}

/// KVM's KVM_MAX_IRQ_ROUTES (include/linux/kvm_host.h), not in the uapi.
const KVM_MAX_IRQ_ROUTES: i32 = 4096;

/// KVM_CHECK_EXTENSION: 0 for anything rvmx does not implement.
fn check_extension(cap: usize) -> i32 {
    // CAST: capability numbers are small.
    match cap as u32 {
        KVM_CAP_USER_MEMORY | KVM_CAP_READONLY_MEM | KVM_CAP_IMMEDIATE_EXIT | KVM_CAP_HLT
        | KVM_CAP_EXT_CPUID | KVM_CAP_SET_TSS_ADDR | KVM_CAP_SET_IDENTITY_MAP_ADDR
        | KVM_CAP_XSAVE | KVM_CAP_XCRS | KVM_CAP_VCPU_EVENTS | KVM_CAP_INTR_SHADOW
        | KVM_CAP_BINARY_STATS_FD | KVM_CAP_MP_STATE
        // Deleting a slot (size 0) and slots side by side both work.
        | KVM_CAP_DESTROY_MEMORY_REGION_WORKS | KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
        // Changes to the VMM's mapping of guest memory reach the guest (the
        // MMU notifier, vm.rs).
        | KVM_CAP_SYNC_MMU => 1,
        // As KVM, which reports its routing table's size even without an
        // in-kernel irqchip (KVM_SET_GSI_ROUTING then fails, as here).
        KVM_CAP_IRQ_ROUTING => KVM_MAX_IRQ_ROUTES,
        // The machine-check MSRs (msrs/emulated.rs): as KVM, the number of
        // banks a vCPU may have. No machine check is ever injected.
        KVM_CAP_MCE => crate::msrs::emulated::MCE_BANKS as i32,
        KVM_CAP_NR_MEMSLOTS => vm::MAX_SLOTS as i32,
        // As KVM: the recommended number is one vCPU per online CPU, the
        // hard limit (and the ids' bound) is MAX_VCPUS.
        // SAFETY: reads a counter.
        KVM_CAP_NR_VCPUS => unsafe { rvmx_glue_num_online_cpus() }.min(vm::MAX_VCPUS) as i32,
        KVM_CAP_USER_NMI => i32::from(crate::vmxon::caps().is_some_and(|c| c.virtual_nmis())),
        KVM_CAP_MAX_VCPUS | KVM_CAP_MAX_VCPU_ID => vm::MAX_VCPUS as i32,
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
            install_fd(Vm::new()?, rvmx_glue_vm_fd)
        }
        uapi::KVM_GET_VCPU_MMAP_SIZE if arg != 0 => Err(EINVAL),
        uapi::KVM_GET_VCPU_MMAP_SIZE => Ok((vcpu::MMAP_PAGES * 4096) as i32),
        uapi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
        uapi::KVM_GET_MSR_INDEX_LIST => {
            // Like KVM: the count goes back even when the caller's array is
            // too small (E2BIG), so it can retry with the right size.
            let mut list: kvm_msr_list = read_arg(arg)?;
            let room = list.nmsrs;
            // CAST: the list has a handful of entries.
            list.nmsrs = crate::msrs::INDEX_LIST.len() as u32;
            write_arg(arg, &list)?;
            if room < list.nmsrs {
                return Err(E2BIG);
            }
            write_array(arg + core::mem::size_of::<kvm_msr_list>(), &crate::msrs::INDEX_LIST).map(|()| 0)
        }
        uapi::KVM_X86_GET_MCE_CAP_SUPPORTED => write_arg(arg, &crate::msrs::emulated::SUPPORTED_MCE_CAP).map(|()| 0),
        uapi::KVM_GET_SUPPORTED_CPUID => {
            let mut c: kvm_cpuid2 = read_arg(arg)?;
            let table = crate::exits::cpuid::supported()?;
            // CAST: at most MAX_ENTRIES (256) entries.
            if (c.nent as usize) < table.len() {
                return Err(E2BIG);
            }
            write_array(arg + core::mem::size_of::<kvm_cpuid2>(), &table)?;
            c.nent = table.len() as u32;
            write_arg(arg, &c).map(|()| 0)
        }
        // Not implemented: what a driver answers for an ioctl it does not
        // know (KVM answers EINVAL for unknown numbers of its own; see the
        // README).
        _ => Err(ENOTTY),
    }
}

/// `unlocked_ioctl` of /dev/rvmx.
#[no_mangle]
pub(crate) extern "C" fn rvmx_dev_ioctl(
    _file: *mut crate::kglue::file,
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
            // The id is the vCPU's until the vCPU is freed (vm.rs, `VcpuId`):
            // a failed creation releases it at once.
            let vcpu = Vcpu::new(vm.reserve_vcpu_id(id)?)?;
            // If no fd can be installed (EMFILE), the vCPU is freed: so is
            // its id, which a later KVM_CREATE_VCPU may use again (as in KVM).
            install_fd(vcpu, rvmx_glue_vcpu_fd)
        }
        uapi::KVM_CHECK_EXTENSION => Ok(check_extension(arg)),
        // The file holds a reference to the VM (stats.rs).
        uapi::KVM_GET_STATS_FD => install_fd(vm.clone(), rvmx_glue_vm_stats_fd),
        uapi::KVM_GET_DIRTY_LOG => {
            let log: kvm_dirty_log = read_arg(arg)?;
            // SAFETY: reads the pointer member of the union (plain integer).
            let bitmap = unsafe { log.__bindgen_anon_1.padding2 };
            vm.get_dirty_log(log.slot, bitmap).map(|()| 0)
        }
        // What KVM needs these for (a real-mode TSS and an identity-mapped
        // page table when the CPU lacks unrestricted guest) rvmx never
        // needs; the calls are accepted with KVM's checks, so that clients
        // that make them run unchanged.
        uapi::KVM_SET_TSS_ADDR if arg > 0xffff_d000 => Err(EINVAL),
        uapi::KVM_SET_TSS_ADDR => Ok(0),
        // Without an in-kernel irqchip there is nothing to route: KVM reads
        // the header (EFAULT if it cannot) and refuses with EINVAL.
        uapi::KVM_SET_GSI_ROUTING => {
            let _: kvm_irq_routing = read_arg(arg)?;
            Err(EINVAL)
        }
        uapi::KVM_SET_IDENTITY_MAP_ADDR => {
            if vm.has_vcpus() {
                return Err(EINVAL);
            }
            let _addr: u64 = read_arg(arg)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

/// `unlocked_ioctl` of a VM fd.
#[no_mangle]
pub(crate) extern "C" fn rvmx_vm_ioctl(vm: *const core::ffi::c_void, cmd: core::ffi::c_uint, arg: core::ffi::c_ulong) -> core::ffi::c_long {
    // SAFETY: `vm` is the fd's private_data, from `into_foreign`, alive
    // until release, which cannot run during an ioctl.
    let vm = unsafe { Arc::<Vm>::borrow(vm) };
    to_long(vm_ioctl(&vm.into(), cmd, arg as usize))
}

/// `release` of a VM fd: drops the fd's reference (vCPUs hold their own).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vm_release(vm: *const core::ffi::c_void) {
    // SAFETY: the reference the fd owned since `into_foreign`.
    drop(unsafe { Arc::<Vm>::from_foreign(vm) });
}

fn vcpu_ioctl(vcpu: ArcBorrow<'_, Vcpu>, cmd: u32, arg: usize) -> Result<i32> {
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
        uapi::KVM_INTERRUPT => {
            let irq: kvm_interrupt = read_arg(arg)?;
            vcpu.interrupt(irq.irq).map(|()| 0)
        }
        uapi::KVM_GET_MSRS | uapi::KVM_SET_MSRS => {
            let head: kvm_msrs = read_arg(arg)?;
            if head.nmsrs >= MAX_IO_MSRS {
                return Err(E2BIG);
            }
            let at = arg + core::mem::size_of::<kvm_msrs>();
            let mut entries: KVec<kvm_msr_entry> = read_array(at, head.nmsrs as usize)?;
            let n = if cmd == uapi::KVM_GET_MSRS {
                let n = vcpu.get_msrs(&mut entries)?;
                write_array(at, &entries[..n])?;
                n
            } else {
                vcpu.set_msrs(&entries)?
            };
            // CAST: n <= MAX_IO_MSRS.
            Ok(n as i32)
        }
        uapi::KVM_SET_SIGNAL_MASK => {
            if arg == 0 {
                return vcpu.set_signal_mask(None).map(|()| 0);
            }
            let head: kvm_signal_mask = read_arg(arg)?;
            // The kernel's sigset_t on x86-64: 64 signals, 8 bytes.
            if head.len != 8 {
                return Err(EINVAL);
            }
            let mask: u64 = read_arg(arg + core::mem::size_of::<kvm_signal_mask>())?;
            vcpu.set_signal_mask(Some(mask)).map(|()| 0)
        }
        uapi::KVM_NMI => vcpu.nmi().map(|()| 0),
        uapi::KVM_X86_SETUP_MCE => vcpu.setup_mce(read_arg(arg)?).map(|()| 0),
        // Without an in-kernel local APIC a vCPU is always runnable (HLT
        // exits to userspace), and RUNNABLE is the only state a VMM may
        // set, as in KVM (kvm_arch_vcpu_ioctl_get/set_mpstate).
        uapi::KVM_GET_MP_STATE => write_arg(arg, &kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE }).map(|()| 0),
        uapi::KVM_SET_MP_STATE => match read_arg::<kvm_mp_state>(arg)?.mp_state {
            KVM_MP_STATE_RUNNABLE => Ok(0),
            _ => Err(EINVAL),
        },
        uapi::KVM_GET_STATS_FD => install_fd(Arc::from(vcpu), rvmx_glue_vcpu_stats_fd),
        uapi::KVM_GET_VCPU_EVENTS => write_arg(arg, &vcpu.get_events()?).map(|()| 0),
        uapi::KVM_SET_VCPU_EVENTS => vcpu.set_events(&read_arg(arg)?).map(|()| 0),
        uapi::KVM_GET_FPU => write_arg(arg, &vcpu.get_fpu()?).map(|()| 0),
        uapi::KVM_SET_FPU => vcpu.set_fpu(&read_arg(arg)?).map(|()| 0),
        uapi::KVM_GET_XSAVE => {
            let mut x = zeroed_box::<kvm_xsave>()?;
            vcpu.get_xsave(&mut x)?;
            write_arg(arg, &*x).map(|()| 0)
        }
        uapi::KVM_SET_XSAVE => {
            let x: KBox<kvm_xsave> = read_arg_boxed(arg)?;
            vcpu.set_xsave(&x).map(|()| 0)
        }
        uapi::KVM_GET_XCRS => write_arg(arg, &vcpu.get_xcrs()?).map(|()| 0),
        uapi::KVM_SET_XCRS => vcpu.set_xcrs(&read_arg(arg)?).map(|()| 0),
        uapi::KVM_SET_CPUID2 => {
            let head: kvm_cpuid2 = read_arg(arg)?;
            if head.nent as usize > crate::exits::cpuid::MAX_ENTRIES {
                return Err(E2BIG);
            }
            let table = read_array(arg + core::mem::size_of::<kvm_cpuid2>(), head.nent as usize)?;
            vcpu.set_cpuid(table).map(|()| 0)
        }
        uapi::KVM_GET_CPUID2 => {
            let mut head: kvm_cpuid2 = read_arg(arg)?;
            let table = vcpu.get_cpuid()?;
            if (head.nent as usize) < table.len() {
                return Err(E2BIG);
            }
            write_array(arg + core::mem::size_of::<kvm_cpuid2>(), &table)?;
            // CAST: at most MAX_ENTRIES entries.
            head.nent = table.len() as u32;
            write_arg(arg, &head).map(|()| 0)
        }
        _ => Err(EINVAL),
    }
}

/// `unlocked_ioctl` of a vCPU fd.
#[no_mangle]
pub(crate) extern "C" fn rvmx_vcpu_ioctl(vcpu: *const core::ffi::c_void, cmd: core::ffi::c_uint, arg: core::ffi::c_ulong) -> core::ffi::c_long {
    // SAFETY: as in `rvmx_vm_ioctl`.
    let vcpu = unsafe { Arc::<Vcpu>::borrow(vcpu) };
    to_long(vcpu_ioctl(vcpu, cmd, arg as usize))
}

/// `release` of a vCPU fd.
#[no_mangle]
pub(crate) extern "C" fn rvmx_vcpu_release(vcpu: *const core::ffi::c_void) {
    // SAFETY: the reference the fd owned since `into_foreign`.
    // The vCPU (and its id) lives on while its statistics file holds it.
    drop(unsafe { Arc::<Vcpu>::from_foreign(vcpu) });
}

/// `read` of a VM's statistics file (KVM_GET_STATS_FD; stats.rs).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vm_stats_read(vm: *const core::ffi::c_void, buf: *mut core::ffi::c_char, size: usize, pos: *mut i64) -> isize {
    // SAFETY: the file's reference (`install_fd`) keeps the VM alive while
    // the file exists; `pos` is the file position the VFS hands in.
    let (vm, pos) = unsafe { (Arc::<Vm>::borrow(vm), &mut *pos) };
    // SAFETY: reads the current task's process id.
    let pid = unsafe { rvmx_glue_current_tgid() };
    // CAST: a count of at most `size` bytes, or a negative errno.
    crate::stats::read(&crate::stats::Source::Vm(vm.stats()), pid, buf as usize, size, pos).map_or_else(|e| e.to_errno() as isize, |n| n as isize)
}

/// `release` of a VM's statistics file.
#[no_mangle]
pub(crate) extern "C" fn rvmx_vm_stats_release(vm: *const core::ffi::c_void) {
    // SAFETY: the reference the file owned since `into_foreign`.
    drop(unsafe { Arc::<Vm>::from_foreign(vm) });
}

/// `read` of a vCPU's statistics file.
#[no_mangle]
pub(crate) extern "C" fn rvmx_vcpu_stats_read(vcpu: *const core::ffi::c_void, buf: *mut core::ffi::c_char, size: usize, pos: *mut i64) -> isize {
    // SAFETY: as in `rvmx_vm_stats_read`.
    let (vcpu, pos) = unsafe { (Arc::<Vcpu>::borrow(vcpu), &mut *pos) };
    // SAFETY: reads the current task's process id.
    let pid = unsafe { rvmx_glue_current_tgid() };
    let src = crate::stats::Source::Vcpu(vcpu.stats(), vcpu.id());
    // CAST: as in `rvmx_vm_stats_read`.
    crate::stats::read(&src, pid, buf as usize, size, pos).map_or_else(|e| e.to_errno() as isize, |n| n as isize)
}

/// `release` of a vCPU's statistics file: only the reference goes (the
/// vCPU fd's release gives back the vCPU id).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vcpu_stats_release(vcpu: *const core::ffi::c_void) {
    // SAFETY: the reference the file owned since `into_foreign`.
    drop(unsafe { Arc::<Vcpu>::from_foreign(vcpu) });
}

/// The page behind page `index` of a vCPU mapping (kglue/files.c's mmap).
#[no_mangle]
pub(crate) extern "C" fn rvmx_vcpu_page(vcpu: *const core::ffi::c_void, index: core::ffi::c_ulong) -> *mut crate::kglue::page {
    // SAFETY: as in `rvmx_vm_ioctl` (mmap runs with the fd open).
    let vcpu = unsafe { Arc::<Vcpu>::borrow(vcpu) };
    vcpu.mmap_page(index as usize)
}

/// The registered `/dev/rvmx` misc device; deregistered on drop.
pub(crate) struct RvmxDevice(());

impl RvmxDevice {
    pub(crate) fn register() -> Result<Self> {
        // SAFETY: registers kglue/files.c's static miscdevice; paired with the
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
