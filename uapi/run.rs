// SPDX-License-Identifier: GPL-2.0

//! `RunPage`: the one way rvmx reads and writes a vCPU's `struct kvm_run`,
//! the page it shares with the VMM (mmap of the vCPU fd, page 0); and
//! `PioPage`, the same for the port-I/O data page beside it (page
//! KVM_PIO_PAGE_OFFSET, where `kvm_run.io.data_offset` points). Another
//! thread of the VMM may write any byte of it at any moment, so rvmx never
//! makes a Rust reference into it (that would promise the compiler nobody
//! else changes it): every access is one volatile load or store of one
//! field through a raw pointer, and a value read from it is used once.

use super::{kvm_run, rvmx_fail_entry, KVM_EXIT_EXCEPTION, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HYPERCALL, KVM_EXIT_INTERNAL_ERROR, KVM_EXIT_IO, KVM_EXIT_MMIO};
use core::ptr::addr_of_mut;

/// A vCPU's run page.
///
/// # Invariants
///
/// `ptr` points at the vCPU's run page, a kernel page the vCPU owns for as
/// long as it lives (userspace maps the same page; it cannot free it).
#[derive(Clone, Copy)]
pub(crate) struct RunPage {
    ptr: *mut kvm_run,
}

/// A store of `v` into field `$($f).+` of the run page `$p`.
macro_rules! put {
    ($p:expr, $($f:ident).+, $v:expr) => {
        // SAFETY: the field lies within the run page (type invariant of
        // `RunPage`); a volatile store makes no reference into shared memory.
        unsafe { addr_of_mut!((*$p.ptr).$($f).+).write_volatile($v) }
    };
}

/// A load of field `$($f).+` of the run page `$p`.
macro_rules! get {
    ($p:expr, $($f:ident).+) => {
        // SAFETY: as for `put!`.
        unsafe { addr_of_mut!((*$p.ptr).$($f).+).read_volatile() }
    };
}

/// A vCPU's port-I/O data page: the data of an IN or OUT (up to 4 bytes),
/// or of a string instruction (up to a page), as KVM's.
///
/// # Invariants
///
/// `ptr` points at the vCPU's PIO page, a kernel page of `PIO_PAGE_SIZE`
/// bytes the vCPU owns for as long as it lives (userspace maps it too).
#[derive(Clone, Copy)]
pub(crate) struct PioPage {
    ptr: *mut u8,
}

/// The PIO page's size.
pub(crate) const PIO_PAGE_SIZE: usize = 4096;

impl PioPage {
    /// # Safety
    ///
    /// `ptr` must be a vCPU's PIO page, live as long as the value is used.
    pub(crate) unsafe fn new(ptr: *mut u8) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { ptr }
    }

    /// Writes `data` at byte `offset`. Panics never: a range past the page
    /// is cut (callers keep to it: a string instruction moves at most a
    /// page).
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        let end = offset.saturating_add(data.len()).min(PIO_PAGE_SIZE);
        for (i, &b) in (offset..end).zip(data) {
            // SAFETY: `i` is within the page (type invariant); one volatile
            // byte store: userspace may change the page at any time.
            unsafe { self.ptr.add(i).write_volatile(b) };
        }
    }

    /// Reads bytes from `offset` into `buf` (what lies past the page reads
    /// as 0).
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) {
        buf.fill(0);
        let end = offset.saturating_add(buf.len()).min(PIO_PAGE_SIZE);
        for (i, b) in (offset..end).zip(buf.iter_mut()) {
            // SAFETY: as in `write`; one volatile byte load.
            *b = unsafe { self.ptr.add(i).read_volatile() };
        }
    }
}

impl RunPage {
    /// # Safety
    ///
    /// `ptr` must be a vCPU's run page, live as long as the value is used.
    pub(crate) unsafe fn new(ptr: *mut kvm_run) -> Self {
        // INVARIANT: guaranteed by the caller.
        Self { ptr }
    }

    // What userspace hands in with each KVM_RUN.

    pub(crate) fn immediate_exit(self) -> u8 {
        get!(self, immediate_exit__unsafe)
    }
    pub(crate) fn request_interrupt_window(self) -> u8 {
        get!(self, request_interrupt_window)
    }
    pub(crate) fn cr8(self) -> u64 {
        get!(self, cr8)
    }
    /// The value userspace put in for a hypercall's RAX.
    pub(crate) fn hypercall_ret(self) -> u64 {
        get!(self, __bindgen_anon_1.hypercall.ret)
    }
    /// The data userspace put in for an MMIO read.
    pub(crate) fn mmio_data(self) -> [u8; 8] {
        get!(self, __bindgen_anon_1.mmio.data)
    }

    /// The exit reason as the run page holds it now (what rvmx wrote,
    /// unless userspace changed it since).
    pub(crate) fn exit_reason(self) -> u32 {
        get!(self, exit_reason)
    }

    // What rvmx hands out at each return from KVM_RUN.

    pub(crate) fn set_exit_reason(self, reason: u32) {
        put!(self, exit_reason, reason);
    }
    /// The guest's interrupt state (KVM updates these at every return).
    pub(crate) fn set_interrupt_state(self, if_flag: bool, ready: bool) {
        put!(self, if_flag, u8::from(if_flag));
        put!(self, ready_for_interrupt_injection, u8::from(ready));
    }
    pub(crate) fn set_cr8_apic_base(self, cr8: u64, apic_base: u64) {
        put!(self, cr8, cr8);
        put!(self, apic_base, apic_base);
    }

    /// KVM_EXIT_IO: `count` elements of `size` bytes at the port-I/O page.
    pub(crate) fn exit_io(self, direction: u8, size: u8, port: u16, count: u32, data_offset: u64) {
        put!(self, __bindgen_anon_1.io.direction, direction);
        put!(self, __bindgen_anon_1.io.size, size);
        put!(self, __bindgen_anon_1.io.port, port);
        put!(self, __bindgen_anon_1.io.count, count);
        put!(self, __bindgen_anon_1.io.data_offset, data_offset);
        self.set_exit_reason(KVM_EXIT_IO);
    }

    /// KVM_EXIT_MMIO: `len` bytes at `addr`, with `data` for a write.
    pub(crate) fn exit_mmio(self, addr: u64, len: u32, write: Option<u64>) {
        put!(self, __bindgen_anon_1.mmio.phys_addr, addr);
        put!(self, __bindgen_anon_1.mmio.len, len);
        put!(self, __bindgen_anon_1.mmio.is_write, u8::from(write.is_some()));
        put!(self, __bindgen_anon_1.mmio.data, write.unwrap_or(0).to_le_bytes());
        self.set_exit_reason(KVM_EXIT_MMIO);
    }

    /// KVM_EXIT_HYPERCALL: number, six arguments, flags; `ret` cleared.
    pub(crate) fn exit_hypercall(self, nr: u64, args: [u64; 6], flags: u64) {
        put!(self, __bindgen_anon_1.hypercall.nr, nr);
        put!(self, __bindgen_anon_1.hypercall.args, args);
        put!(self, __bindgen_anon_1.hypercall.ret, 0);
        put!(self, __bindgen_anon_1.hypercall.__bindgen_anon_1.flags, flags);
        self.set_exit_reason(KVM_EXIT_HYPERCALL);
    }

    /// KVM_EXIT_EXCEPTION: a guest exception rvmx cannot deliver.
    pub(crate) fn exit_exception(self, exception: u32, error_code: u32) {
        put!(self, __bindgen_anon_1.ex.exception, exception);
        put!(self, __bindgen_anon_1.ex.error_code, error_code);
        self.set_exit_reason(KVM_EXIT_EXCEPTION);
    }

    /// KVM_EXIT_INTERNAL_ERROR: a suberror and up to 16 words of data.
    pub(crate) fn exit_internal_error(self, suberror: u32, data: &[u64]) {
        let n = data.len().min(16);
        put!(self, __bindgen_anon_1.internal.suberror, suberror);
        // CAST: at most 16.
        put!(self, __bindgen_anon_1.internal.ndata, n as u32);
        let mut words = [0u64; 16];
        for (w, d) in words.iter_mut().zip(data) {
            *w = *d;
        }
        put!(self, __bindgen_anon_1.internal.data, words);
        self.set_exit_reason(KVM_EXIT_INTERNAL_ERROR);
    }

    /// KVM_EXIT_FAIL_ENTRY: the hardware's reason and the CPU, as KVM
    /// gives them, followed by what rvmx's checker found (uapi/rvmx.h,
    /// `struct rvmx_fail_entry`: check number, segment, field value).
    pub(crate) fn exit_fail_entry(self, reason: u64, cpu: u32, found: (u16, u8, u64)) {
        let e = rvmx_fail_entry {
            hardware_entry_failure_reason: reason,
            cpu,
            check: found.0,
            segment: found.1,
            pad: 0,
            value: found.2,
        };
        // SAFETY: the exit union lies within the run page (type invariant)
        // and is 256 bytes, larger than `rvmx_fail_entry` (uapi/mod.rs
        // asserts it); a volatile store of the whole struct, no reference.
        unsafe { addr_of_mut!((*self.ptr).__bindgen_anon_1).cast::<rvmx_fail_entry>().write_volatile(e) };
        self.set_exit_reason(KVM_EXIT_FAIL_ENTRY);
    }
}
