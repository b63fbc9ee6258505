//! `make bench`'s client: the same guest microbenchmarks on /dev/rvmx or
//! /dev/kvm (the first argument), one `# BENCH {json}` line per figure,
//! which tools/bench collects into a table, JSON and a chart. Not a test:
//! it checks nothing but that each guest ran as planned (TAP, one line per
//! benchmark).
//!
//! Times come from CLOCK_MONOTONIC in the emulated machine, whose clock is
//! the emulated TSC (Bochs, `clock: sync=none`): they count emulated
//! instructions, so a run repeats, and they compare rvmx with KVM on the
//! same emulated CPU; they are not hardware figures.

use kvm_bindings::{kvm_segment, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::time::Instant;

const EXITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/exits.bin"));
const TOUCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/touch.bin"));
const PAGE: u64 = 4096;

/// One figure: printed for tools/bench.
fn report(device: &str, metric: &str, value: f64, unit: &str, what: &str) {
    println!("# BENCH {{\"device\": \"{device}\", \"metric\": \"{metric}\", \"value\": {value:.3}, \"unit\": \"{unit}\", \"what\": \"{what}\"}}");
}

/// Runs `rounds` exits of kind `kind` of guests/exits.asm; returns the
/// time per exit in µs, or what went wrong.
fn exits(kvm: &Kvm, kind: u64, rounds: u64) -> Result<f64, String> {
    let vm = TestVm::new(kvm, 0x80000);
    vm.write(0x1000, EXITS);
    let mut vcpu = vm.real_mode_vcpu(kvm, 0, 0x1000);
    let mut r = vcpu.get_regs().map_err(|e| e.to_string())?;
    r.rcx = rounds;
    r.rbx = kind;
    vcpu.set_regs(&r).map_err(|e| e.to_string())?;
    let start = Instant::now();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(0x11, _)) => break,
            Ok(VcpuExit::IoOut(0x10, _)) | Ok(VcpuExit::Hlt) | Ok(VcpuExit::MmioWrite(..)) => {}
            Ok(VcpuExit::Hypercall(h)) => *h.ret = 0,
            other => return Err(format!("{other:?}")),
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / rounds as f64)
}

/// /proc/meminfo's `field`, in KiB.
fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Free pages on the page allocator's per-CPU lists (/proc/zoneinfo's
/// `count:` lines under `pagesets`), in KiB.
fn pcp_kib() -> i64 {
    let text = std::fs::read_to_string("/proc/zoneinfo").unwrap_or_default();
    let pages: i64 = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("count:"))
        .filter_map(|v| v.trim().parse::<i64>().ok())
        .sum();
    pages * 4
}

/// Memory the kernel uses apart from the VMM's anonymous pages (the guest
/// RAM itself) and the page cache (the initramfs, whatever drop_caches
/// leaves), in KiB. Measured after a pause, so that memory whose freeing
/// was deferred (RCU, workqueues: KVM frees a VM's memory that way) is
/// counted as free.
fn kernel_kib() -> i64 {
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    // Free pages the page allocator keeps on its per-CPU lists are not in
    // MemFree (after a large munmap they are megabytes): count them free.
    let used = meminfo("MemTotal") as i64 - meminfo("MemFree") as i64 - pcp_kib();
    used - meminfo("AnonPages") as i64 - meminfo("Cached") as i64 - meminfo("Buffers") as i64
}

/// A VM with `size` bytes of anonymous memory at guest-physical 0 (slot 0,
/// `flags`), for the memory benchmarks, and a vCPU in 32-bit protected
/// mode running guests/touch.asm.
struct MemVm {
    vm: kvm_ioctls::VmFd,
    vcpu: VcpuFd,
    mem: *mut u8,
    size: usize,
}

impl MemVm {
    fn new(kvm: &Kvm, size: usize, flags: u32) -> Result<MemVm, String> {
        let vm = kvm.create_vm().map_err(|e| e.to_string())?;
        // SAFETY: a fresh anonymous mapping, unmapped in `drop`.
        let mem = unsafe {
            libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE,
                       libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
        };
        if mem == libc::MAP_FAILED {
            return Err("mmap".into());
        }
        let region = kvm_userspace_memory_region { slot: 0, flags, guest_phys_addr: 0, memory_size: size as u64, userspace_addr: mem as u64 };
        // SAFETY: the mapping outlives the VM (dropped after it).
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| e.to_string())?;
        // SAFETY: within the mapping.
        unsafe { std::ptr::copy_nonoverlapping(TOUCH.as_ptr(), (mem as *mut u8).add(0x1000), TOUCH.len()) };
        let vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
        let mut s = vcpu.get_sregs().map_err(|e| e.to_string())?;
        let seg = |selector, type_| kvm_segment {
            base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0, padding: 0,
        };
        s.cs = seg(8, 11);
        s.ds = seg(16, 3);
        s.es = s.ds;
        s.ss = s.ds;
        s.cr0 |= 1;
        vcpu.set_sregs(&s).map_err(|e| e.to_string())?;
        Ok(MemVm { vm, vcpu, mem: mem.cast(), size })
    }

    /// One round of guests/touch.asm: `count` bytes written, `stride`
    /// apart, from `start`. Returns the time it took, in µs.
    fn round(&mut self, start: u64, count: u64, stride: u64) -> Result<f64, String> {
        let r = kvm_bindings::kvm_regs { rip: 0x1000, rflags: 2, rsi: start, rbp: count, rdx: stride, ..Default::default() };
        self.vcpu.set_regs(&r).map_err(|e| e.to_string())?;
        let t = Instant::now();
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, _)) => Ok(t.elapsed().as_secs_f64() * 1e6),
            other => Err(format!("{other:?}")),
        }
    }
}

impl Drop for MemVm {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the VM goes first (its fd is
        // closed by the field drops after this), which is fine: the slot's
        // pages are unmapped from EPT when the mapping goes.
        unsafe { libc::munmap(self.mem.cast(), self.size) };
    }
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let dev = if path.ends_with("kvm") { "kvm" } else { "rvmx" };
    let kvm = Kvm::new_with_path(CString::new(path.clone()).unwrap()).expect("open device");
    let mut t = Tap::plan(6);

    // 1. A 256 MiB VM touched page by page, and its kernel memory: first,
    // while nothing freed before is still being freed (kernel_kib).
    const MIB256: usize = 256 << 20;
    let touched = MemVm::new(&kvm, MIB256, 0).and_then(|mut m| {
        // Measured with the VM, its vCPU and slot made: what touching
        // costs the kernel (EPT tables, tracking of the pages).
        let before = kernel_kib();
        // Pages from 1 MiB up (the guest's code is below).
        let pages = (MIB256 as u64 - (1 << 20)) / PAGE;
        let us = m.round(1 << 20, pages, PAGE)?;
        let kib = kernel_kib() - before;
        Ok((us / pages as f64, kib, m))
    });
    match &touched {
        Ok((per_page, kib, _)) => {
            report(dev, "touch_256m", *per_page, "us", "first touch of a guest page (256 MiB VM, per page)");
            report(dev, "kmem_per_gib", *kib as f64 * 4.0 / 1024.0, "MiB", "kernel memory per GiB of guest RAM touched (EPT, tracking)");
        }
        Err(e) => println!("# touch_256m: {e}"),
    }
    t.check(touched.is_ok(), "256 MiB touched page by page", touched.as_ref().err().cloned().unwrap_or_default());
    drop(touched);

    // 2. Kernel memory per vCPU: 4 VMs of 64 vCPUs (many, so that the
    // figure stands above the page allocator's per-CPU lists, which hand
    // out pages without MemFree moving), counted from when the VMs exist
    // (what a VM itself takes is not counted).
    const PER_VM: u64 = 64;
    let vms: Vec<_> = (0..4).filter_map(|_| kvm.create_vm().ok()).collect();
    let before = kernel_kib();
    let vcpus: Vec<_> = vms.iter().flat_map(|vm| (0..PER_VM).filter_map(|i| vm.create_vcpu(i).ok())).collect();
    let after = kernel_kib();
    let want = 4 * PER_VM as usize;
    if vcpus.len() == want {
        report(dev, "kmem_per_vcpu", (after - before) as f64 / want as f64, "KiB", "kernel memory per vCPU (4 VMs of 64 vCPUs, run pages mapped)");
    }
    t.check(vcpus.len() == want, "256 vCPUs created", vcpus.len());
    drop(vcpus);
    drop(vms);

    // 3. VM create + destroy.
    let n = 50;
    let start = Instant::now();
    let mut ok = true;
    for _ in 0..n {
        ok &= kvm.create_vm().is_ok();
    }
    report(dev, "vm_create_destroy", start.elapsed().as_secs_f64() * 1e6 / f64::from(n), "us", "KVM_CREATE_VM and close");
    t.check(ok, "VM create and destroy", "");

    // 4. Exits, one kind at a time.
    let kinds = [
        (0, 20_000, "exit_cpuid", "CPUID exit, handled in the kernel"),
        (2, 20_000, "exit_rdmsr", "RDMSR (IA32_APIC_BASE) exit, in the kernel"),
        (3, 5_000, "exit_vmcall", "VMCALL exit (KVM: in the kernel; rvmx: to userspace as KVM_EXIT_HYPERCALL)"),
        (1, 5_000, "exit_pio", "OUT exit to userspace and back"),
        (4, 5_000, "exit_mmio", "MMIO store exit to userspace and back"),
        (5, 5_000, "exit_hlt", "HLT exit to userspace and back"),
    ];
    let mut bad = Vec::new();
    for (kind, rounds, metric, what) in kinds {
        match exits(&kvm, kind, rounds) {
            Ok(us) => report(dev, metric, us, "us", what),
            Err(e) => bad.push(format!("{metric}: {e}")),
        }
    }
    t.check(bad.is_empty(), "exit benchmarks ran (CPUID, RDMSR, VMCALL, OUT, MMIO, HLT)", format!("{bad:?}"));

    // 5. Dirty logging over a 1 GiB slot: the guest writes one page in 16
    // (16,368 pages); then KVM_GET_DIRTY_LOG, and the same writes again,
    // each faulting once on the write protection the log put back.
    const GIB: usize = 1 << 30;
    let dirty = MemVm::new(&kvm, GIB, KVM_MEM_LOG_DIRTY_PAGES).and_then(|mut m| {
        let pages = (GIB as u64 - (1 << 20)) / (16 * PAGE);
        m.round(1 << 20, pages, 16 * PAGE)?;
        m.vm.get_dirty_log(0, GIB).map_err(|e| e.to_string())?;
        let redirty = m.round(1 << 20, pages, 16 * PAGE)?;
        let t0 = Instant::now();
        let log = m.vm.get_dirty_log(0, GIB).map_err(|e| e.to_string())?;
        let get = t0.elapsed().as_secs_f64() * 1e6;
        let set: u64 = log.iter().map(|w| u64::from(w.count_ones())).sum();
        // Exactly the pages written (the guest uses no stack and writes
        // nothing else).
        if set != pages {
            return Err(format!("{set} pages in the log, {pages} written"));
        }
        Ok((get, redirty / pages as f64))
    });
    match &dirty {
        Ok((get, per_page)) => {
            report(dev, "dirty_log_get_1g", *get, "us", "KVM_GET_DIRTY_LOG of a 1 GiB slot with 16,368 dirty pages");
            report(dev, "dirty_log_redirty", *per_page, "us", "write to a page the dirty log write-protected (per page)");
        }
        Err(e) => println!("# dirty log: {e}"),
    }
    t.check(dirty.is_ok(), "dirty-log round over 1 GiB", dirty.as_ref().err().cloned().unwrap_or_default());

    // 6. The exit benchmarks again (a second sample: tools/bench takes the
    // lower of the two, the run least disturbed by the emulated machine).
    let mut bad = Vec::new();
    for (kind, rounds, metric, what) in kinds {
        match exits(&kvm, kind, rounds) {
            Ok(us) => report(dev, metric, us, "us", what),
            Err(e) => bad.push(format!("{metric}: {e}")),
        }
    }
    t.check(bad.is_empty(), "exit benchmarks ran again", format!("{bad:?}"));
    t.finish();
}
