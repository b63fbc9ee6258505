// SPDX-License-Identifier: GPL-2.0

//! Statistics in KVM's binary format (Documentation/virt/kvm/api.rst,
//! "KVM_GET_STATS_FD"): the counters a vCPU and a VM keep, and the file a
//! VMM reads them from. The file (kglue/files.c's `rvmx_glue_stats_fd`) holds:
//!
//! | offset              | what                                             |
//! |---------------------|--------------------------------------------------|
//! | 0                   | `struct kvm_stats_header` (6 x u32)              |
//! | 24                  | the id string, 48 bytes: `rvmx-<pid>[/vcpu-<n>]` |
//! | 72                  | descriptors: `struct kvm_stats_desc` + 48-byte name |
//! | after them          | the values, one u64 each                         |
//!
//! Each counter is written by one thread only (the vCPU's, which holds the
//! run token), so an increment is a plain load and store, not a locked
//! instruction: the exit path pays two cache-hot adds (count, time) and
//! two RDTSCs. Readers see each value whole (aligned 64-bit accesses),
//! possibly one exit behind.

use crate::uapi::RunPage;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// Basic exit reasons counted one by one (SDM Vol. 3D Appendix C defines
/// 0 to 78 today); a larger number counts in the last slot.
pub(crate) const EXIT_REASONS: usize = 80;

/// KVM's name length, including the terminating NUL.
const NAME_SIZE: usize = 48;
const HEADER_SIZE: usize = 24;
const DESC_SIZE: usize = 16 + NAME_SIZE;

// Descriptor flags (include/uapi/linux/kvm.h).
const TYPE_CUMULATIVE: u32 = 0;
const TYPE_INSTANT: u32 = 1;
const UNIT_NONE: u32 = 0;
const UNIT_CYCLES: u32 = 3 << 4;

/// A counter with one writer.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the counter's one writer may call it (see the file's
    /// comment): a load and a store, not an atomic add.
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A vCPU's counters. Names follow KVM's where KVM has the same counter.
pub(crate) struct VcpuStats {
    /// Every VM exit, by basic exit reason.
    pub(crate) exit_reason: [Counter; EXIT_REASONS],
    /// Host TSC cycles from each exit to the next VM entry, by the exit's
    /// basic reason: the time the host spent on it, userspace included
    /// for exits to userspace.
    exit_cycles: [Counter; EXIT_REASONS],
    /// VM entries that failed (VMfailValid or exit reason 33/34).
    pub(crate) entry_failures: Counter,
    /// Returns from KVM_RUN (with the run page saying why).
    pub(crate) userspace_exits: Counter,
    /// Returns from KVM_RUN for MMIO (KVM's mmio_exits).
    pub(crate) mmio_exits: Counter,
    /// Returns from KVM_RUN because a signal was pending (KVM's).
    pub(crate) signal_exits: Counter,
    /// EPT violations that mapped guest RAM and resumed the guest.
    pub(crate) ept_faults_mapped: Counter,
    /// Interrupts and NMIs injected at VM entry (KVM's names).
    pub(crate) irq_injections: Counter,
    pub(crate) nmi_injections: Counter,
}

impl VcpuStats {
    pub(crate) fn new() -> Self {
        let zero = || Counter(AtomicU64::new(0));
        VcpuStats {
            exit_reason: core::array::from_fn(|_| zero()),
            exit_cycles: core::array::from_fn(|_| zero()),
            entry_failures: zero(),
            userspace_exits: zero(),
            mmio_exits: zero(),
            signal_exits: zero(),
            ept_faults_mapped: zero(),
            irq_injections: zero(),
            nmi_injections: zero(),
        }
    }

    /// Counts one VM exit with basic reason `basic`.
    pub(crate) fn exit(&self, basic: u32) {
        let i = (basic as usize).min(EXIT_REASONS - 1);
        self.exit_reason[i].add(1);
    }

    /// Adds the host cycles from an exit with basic reason `basic` to the
    /// next entry.
    pub(crate) fn exit_time(&self, basic: u32, cycles: u64) {
        let i = (basic as usize).min(EXIT_REASONS - 1);
        self.exit_cycles[i].add(cycles);
    }

    /// Counts one return from KVM_RUN, from what it returns and what the
    /// run page says.
    pub(crate) fn returned(&self, r: &Result, run: RunPage) {
        self.userspace_exits.add(1);
        match r {
            Err(e) if *e == EINTR => self.signal_exits.add(1),
            Ok(()) if run.exit_reason() == crate::uapi::KVM_EXIT_MMIO => self.mmio_exits.add(1),
            _ => {}
        }
    }

    fn reason(&self, n: usize) -> u64 {
        self.exit_reason[n].get()
    }

    /// Every (name, flags, value) of the vCPU's file, in file order.
    fn entries(&self) -> Result<KVec<Entry>> {
        let sum: u64 = self.exit_reason.iter().map(Counter::get).fold(0, u64::wrapping_add);
        let named = [
            // KVM's names: exits counts every VM exit; the others are the
            // exits of one reason (io_exits: every I/O instruction exit,
            // as KVM's handle_io counts them).
            ("exits", sum),
            ("irq_exits", self.reason(1)),
            ("irq_window_exits", self.reason(7)),
            ("nmi_window_exits", self.reason(8)),
            ("halt_exits", self.reason(12)),
            ("hypercalls", self.reason(18)),
            ("io_exits", self.reason(30)),
            ("mmio_exits", self.mmio_exits.get()),
            ("signal_exits", self.signal_exits.get()),
            ("irq_injections", self.irq_injections.get()),
            ("nmi_injections", self.nmi_injections.get()),
            // rvmx's own.
            ("userspace_exits", self.userspace_exits.get()),
            ("entry_failures", self.entry_failures.get()),
            ("ept_faults_mapped", self.ept_faults_mapped.get()),
        ];
        let mut v = KVec::with_capacity(named.len() + 2 * EXIT_REASONS, GFP_KERNEL)?;
        for (name, value) in named {
            v.push(Entry::new(format_args!("{name}"), TYPE_CUMULATIVE | UNIT_NONE, value), GFP_KERNEL)?;
        }
        for n in 0..EXIT_REASONS {
            v.push(Entry::new(format_args!("exit_reason_{n}"), TYPE_CUMULATIVE | UNIT_NONE, self.reason(n)), GFP_KERNEL)?;
        }
        for n in 0..EXIT_REASONS {
            let cycles = self.exit_cycles[n].get();
            v.push(Entry::new(format_args!("exit_reason_{n}_cycles"), TYPE_CUMULATIVE | UNIT_CYCLES, cycles), GFP_KERNEL)?;
        }
        Ok(v)
    }
}

/// A VM's figures when the file is read: running counts the VM keeps
/// where pages are mapped and unmapped, EPT tables added and slots made
/// (`Vm::stats`, read without the memory lock: a read walks nothing).
pub(crate) struct VmStats {
    /// Guest pages mapped in EPT now (4 KiB pages: KVM's name).
    pub(crate) pages_4k: u64,
    /// EPT paging-structure pages now.
    pub(crate) ept_tables: u64,
    /// Memory slots now.
    pub(crate) memory_slots: u64,
}

impl VmStats {
    fn entries(&self) -> Result<KVec<Entry>> {
        let mut v = KVec::with_capacity(3, GFP_KERNEL)?;
        v.push(Entry::new(format_args!("pages_4k"), TYPE_INSTANT | UNIT_NONE, self.pages_4k), GFP_KERNEL)?;
        v.push(Entry::new(format_args!("ept_tables"), TYPE_INSTANT | UNIT_NONE, self.ept_tables), GFP_KERNEL)?;
        v.push(Entry::new(format_args!("memory_slots"), TYPE_INSTANT | UNIT_NONE, self.memory_slots), GFP_KERNEL)?;
        Ok(v)
    }
}

/// One statistic: its NUL-padded name, descriptor flags, value.
struct Entry {
    name: [u8; NAME_SIZE],
    flags: u32,
    value: u64,
}

impl Entry {
    fn new(name: core::fmt::Arguments<'_>, flags: u32, value: u64) -> Self {
        let mut e = Entry { name: [0; NAME_SIZE], flags, value };
        let mut w = NameWriter { buf: &mut e.name, len: 0 };
        // A name longer than 47 bytes is cut (none is).
        let _ = core::fmt::write(&mut w, name);
        e
    }
}

/// Formats into a fixed name buffer, keeping the last byte NUL.
struct NameWriter<'a> {
    buf: &'a mut [u8; NAME_SIZE],
    len: usize,
}

impl core::fmt::Write for NameWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if self.len + 1 >= NAME_SIZE {
                return Err(core::fmt::Error);
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Whose statistics a file shows.
pub(crate) enum Source<'a> {
    Vcpu(&'a VcpuStats, u32),
    Vm(VmStats),
}

/// Serializes the whole file: header, id, descriptors, data.
fn file(src: &Source<'_>, pid: i32) -> Result<KVec<u8>> {
    let (entries, id) = match src {
        Source::Vcpu(s, n) => (s.entries()?, Entry::new(format_args!("rvmx-{pid}/vcpu-{n}"), 0, 0)),
        Source::Vm(s) => (s.entries()?, Entry::new(format_args!("rvmx-{pid}"), 0, 0)),
    };
    let desc_offset = HEADER_SIZE + NAME_SIZE;
    let data_offset = desc_offset + entries.len() * DESC_SIZE;
    let total = data_offset + entries.len() * 8;
    let mut out = KVec::with_capacity(total, GFP_KERNEL)?;
    let mut put = |bytes: &[u8]| out.extend_from_slice(bytes, GFP_KERNEL);
    // CAST (all u32 below): the file is a few KiB.
    for h in [0, NAME_SIZE as u32, entries.len() as u32, HEADER_SIZE as u32, desc_offset as u32, data_offset as u32] {
        put(&h.to_ne_bytes())?;
    }
    put(&id.name)?;
    for (i, e) in entries.iter().enumerate() {
        put(&e.flags.to_ne_bytes())?;
        put(&0i16.to_ne_bytes())?; // exponent: plain counts
        put(&1u16.to_ne_bytes())?; // size: one u64
        put(&((i * 8) as u32).to_ne_bytes())?; // offset in the data block
        put(&0u32.to_ne_bytes())?; // bucket_size: no histograms
        put(&e.name)?;
    }
    for e in entries.iter() {
        put(&e.value.to_ne_bytes())?;
    }
    Ok(out)
}

/// `read` of a stats file: up to `size` bytes at `*pos` into `buf`, as
/// KVM's kvm_stats_read (a read past the end returns 0).
pub(crate) fn read(src: &Source<'_>, pid: i32, buf: usize, size: usize, pos: &mut i64) -> Result<usize> {
    let start = usize::try_from(*pos).map_err(|_| EINVAL)?;
    let f = file(src, pid)?;
    let Some(rest) = f.get(start..) else { return Ok(0) };
    let n = rest.len().min(size);
    UserSlice::new(buf as _, n).writer().write_slice(&rest[..n])?;
    // CAST: n is at most a few KiB.
    *pos = pos.wrapping_add(n as i64);
    Ok(n)
}
