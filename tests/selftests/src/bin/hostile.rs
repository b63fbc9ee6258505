//! Hostile guests (issue 9): guests that try to hurt the host, on /dev/rvmx
//! (or the device given as the first argument). Prints TAP.
//!
//!   hostile DEVICE [ROUNDS] [SEED]
//!
//! 1. Random code: ROUNDS VMs (default 40), each with two vCPUs executing
//!    random bytes in real, 32-bit protected, PAE and 64-bit long mode, in
//!    turn, for 200 ms. Guest RAM (2 MiB) is random, a read-only slot and
//!    unbacked addresses (MMIO) lie above it; the page tables map MMIO and
//!    some of their own levels live in MMIO; in half the rounds the IDT is
//!    in MMIO. Both vCPUs write over the code the other runs, and the VMM
//!    scribbles over guest RAM while they run. IN and MMIO reads are
//!    answered with random data. Only on rvmx: Bochs 2.7 takes external-
//!    interrupt exits only while the guest has RFLAGS.IF set (README), so
//!    a random guest that executes CLI keeps the CPU under KVM for good;
//!    rvmx bounds every guest section with the VMX-preemption timer.
//! 2. Sensitive instructions, one at a time in a 64-bit guest with no IDT
//!    (any fault ends in a triple fault): MOV to CR0/CR3/CR4/CR8 with every
//!    bit, WRMSR of EFER with every bit, XSETBV with every XCR0 bit, WRMSR
//!    and RDMSR of the MSRs that hold host state, MOV to and from every
//!    debug register with hardware breakpoints armed, WBINVD, INVD,
//!    WRPKRU, XRSTOR/FXRSTOR/LDMXCSR of garbage. On both devices; the
//!    outcome of each is written to /tmp/hostile.<device>.txt, so that the
//!    caller can list where rvmx and KVM differ.
//!
//! After both, the VMM's own state must be what it was: a canary buffer,
//! FS/GS bases, its LDT, MXCSR and the x87 control word, XCR0, PKRU (when
//! the CPU has protection keys) and a hardware watchpoint the VMM set on
//! itself (so DR0-DR7 are the host's again). The per-CPU host registers
//! (MSRs, DR7, DEBUGCTL) are compared before and after by tests/guest/vm.sh
//! with tests/kmod/vmxprobe.ko, and the kernel log by tools/vm-run.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use rvmx_selftests::{install_empty_handler, read_count, watchpoint, Rng, Tap};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::thread::JoinHandleExt;
use std::time::{Duration, Instant};

/// rvmx's VM-entry checks (the module's file), to name the rule a failed
/// entry broke.
// The control bits vmcs/checks.rs tests (`super::controls` there).
#[allow(dead_code)]
#[path = "../../../../vmcs/controls.rs"]
mod controls;
#[allow(dead_code)]
#[path = "../../../../vmcs/checks.rs"]
mod checks;

const RAM: usize = 2 << 20;
const ROM_GPA: u64 = 0x20_0000;
const ROM: usize = 64 << 10;
/// Guest-physical addresses with no slot: every access is an MMIO exit.
const MMIO: u64 = 0x30_0000;
/// Page tables (in RAM, where the random code may scribble over them).
const PD: u64 = 0x1f_1000;
const PDPT_PAE: u64 = 0x1f_0000;
const PML4: u64 = 0x1f_2000;
const PDPT: u64 = 0x1f_3000;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Real,
    Protected,
    Pae,
    Long,
}

struct Ram {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: guest memory; every thread reads and writes it with volatile
// byte accesses only (the guest races with them anyway).
unsafe impl Send for Ram {}
// SAFETY: as above.
unsafe impl Sync for Ram {}

impl Ram {
    fn new(len: usize) -> Ram {
        // SAFETY: a fresh anonymous mapping, unmapped by Drop.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(p != libc::MAP_FAILED);
        Ram { ptr: p as *mut u8, len }
    }
    fn fill(&self, rng: &mut Rng) {
        for i in (0..self.len).step_by(8) {
            self.write(i as u64, &rng.next().to_le_bytes());
        }
    }
    fn write(&self, at: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = at as usize + i;
            assert!(a < self.len);
            // SAFETY: within the mapping; a volatile store (the guest may
            // access the byte at the same time).
            unsafe { self.ptr.add(a).write_volatile(*b) };
        }
    }
    fn write_u64(&self, at: u64, v: u64) {
        self.write(at, &v.to_le_bytes());
    }
}

impl Drop for Ram {
    fn drop(&mut self) {
        // SAFETY: unmaps what `new` mapped; the VM using it is gone.
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

fn seg(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment { base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db, s: 1, l, g: 1, avl: 0, unusable: 0, padding: 0 }
}

/// Identity maps of the first 8 MiB by 2 MiB pages (RAM, the read-only
/// slot, MMIO), with further levels pointing into MMIO: PAE PDPT[1] and
/// long-mode PDPT[1] and PML4[1] are page tables the CPU must read from
/// MMIO.
fn page_tables(ram: &Ram) {
    for i in 0..4u64 {
        ram.write_u64(PD + i * 8, (i << 21) | 0x83);
    }
    ram.write_u64(PDPT_PAE, PD | 1);
    ram.write_u64(PDPT_PAE + 8, MMIO | 1);
    ram.write_u64(PDPT_PAE + 16, 0);
    ram.write_u64(PDPT_PAE + 24, 0);
    ram.write_u64(PML4, PDPT | 3);
    ram.write_u64(PML4 + 8, (MMIO + 0x1000) | 3);
    ram.write_u64(PDPT, PD | 3);
    ram.write_u64(PDPT + 8, (MMIO + 0x2000) | 3);
}

/// Sets the vCPU's mode (and random tables, IDT and GDT places).
fn set_mode(vcpu: &VcpuFd, mode: Mode, rng: &mut Rng, idt_in_mmio: bool) -> Result<(), i32> {
    let mut s: kvm_sregs = vcpu.get_sregs().map_err(|e| e.errno())?;
    match mode {
        Mode::Real => {
            let sel = rng.below(0x1f00) as u16;
            s.cs.selector = sel;
            s.cs.base = u64::from(sel) << 4;
        }
        Mode::Protected | Mode::Pae | Mode::Long => {
            let long = matches!(mode, Mode::Long);
            s.cs = seg(8, 11, u8::from(long), u8::from(!long));
            s.ds = seg(16, 3, 0, 1);
            s.es = s.ds;
            s.ss = s.ds;
            s.fs = s.ds;
            s.gs = s.ds;
            s.cr0 = 0x11 | (1 << 5);
            match mode {
                Mode::Pae => {
                    s.cr0 |= 1 << 31;
                    s.cr4 = 1 << 5;
                    s.cr3 = PDPT_PAE;
                }
                Mode::Long => {
                    s.cr0 |= 1 << 31;
                    s.cr4 = 1 << 5;
                    s.cr3 = PML4;
                    s.efer = (1 << 8) | (1 << 10);
                }
                _ => {}
            }
        }
    }
    s.idt.base = if idt_in_mmio { MMIO + 0x3000 } else { rng.below(RAM as u64) };
    s.idt.limit = rng.below(0x1000) as u16;
    s.gdt.base = rng.below(RAM as u64);
    s.gdt.limit = rng.below(0x1000) as u16;
    vcpu.set_sregs(&s).map_err(|e| e.errno())?;
    let rip_max = if matches!(mode, Mode::Real) { 0xfff0 } else { RAM as u64 - 16 };
    let regs = kvm_regs {
        rax: rng.next(),
        rbx: rng.next(),
        rcx: rng.next(),
        rdx: rng.next(),
        rsi: rng.next(),
        rdi: rng.next(),
        rbp: rng.next(),
        rsp: rng.below(RAM as u64),
        r8: rng.next(),
        r9: rng.next(),
        r10: rng.next(),
        r11: rng.next(),
        r12: rng.next(),
        r13: rng.next(),
        r14: rng.next(),
        r15: rng.next(),
        rip: rng.below(rip_max),
        rflags: 2 | (rng.below(2) << 9),
    };
    vcpu.set_regs(&regs).map_err(|e| e.errno())
}

/// What the guests' runs ended with, by kind.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    /// KVM_RUN errors other than EINTR (none are expected).
    errors: Vec<i32>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        self.errors.extend(other.errors);
    }
    fn bump(&mut self, k: &str) {
        *self.counts.entry(k.to_string()).or_default() += 1;
    }
}

/// Runs one random vCPU until its run ends (shutdown, internal error, ...),
/// `deadline` passes or it made `max_exits` exits to userspace.
fn run_random(mut vcpu: VcpuFd, seed: u64, deadline: Instant, max_exits: u32) -> Tally {
    let mut rng = Rng(seed | 1);
    let mut t = Tally::default();
    for _ in 0..max_exits {
        if Instant::now() >= deadline {
            break;
        }
        let end = match vcpu.run() {
            Ok(VcpuExit::IoIn(_, data)) => {
                data.copy_from_slice(&rng.next().to_le_bytes()[..data.len().min(8)]);
                t.bump("io in");
                false
            }
            Ok(VcpuExit::IoOut(..)) => {
                t.bump("io out");
                false
            }
            Ok(VcpuExit::MmioRead(_, data)) => {
                let n = data.len().min(8);
                data[..n].copy_from_slice(&rng.next().to_le_bytes()[..n]);
                t.bump("mmio read");
                false
            }
            Ok(VcpuExit::MmioWrite(..)) => {
                t.bump("mmio write");
                false
            }
            Ok(VcpuExit::Hlt) => {
                t.bump("hlt");
                false
            }
            Ok(VcpuExit::Intr) => {
                t.bump("signal");
                false
            }
            Ok(VcpuExit::Shutdown) => {
                t.bump("shutdown (triple fault)");
                true
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: reads the `internal` member KVM_RUN filled in.
                let (sub, reason) = unsafe {
                    let i = &vcpu.get_kvm_run().__bindgen_anon_1.internal;
                    (i.suberror, if i.ndata > 0 { i.data[0] } else { u64::MAX })
                };
                t.bump(&format!("internal error {sub}, data[0] {reason:#x}"));
                true
            }
            Ok(VcpuExit::FailEntry(reason, _)) => {
                // The random part runs on rvmx only: the rule its checker
                // named is in the bytes after KVM's fail_entry fields.
                // SAFETY: the exit union is 256 plain bytes.
                let u: [u8; 256] = unsafe { std::mem::transmute(vcpu.get_kvm_run().__bindgen_anon_1) };
                let check = u16::from_ne_bytes([u[12], u[13]]);
                let rule = checks::Check::from_number(check).map_or("no rule named".to_string(), |c| {
                    let seg = checks::Seg::from_number(u[14]).map_or("", |s| s.name());
                    format!("check {check} {c:?} {seg}")
                });
                t.bump(&format!("failed entry {reason:#x} ({rule})"));
                true
            }
            Ok(_) => {
                t.bump("other exit");
                true
            }
            Err(e) if e.errno() == libc::EINTR => {
                t.bump("signal");
                false
            }
            Err(e) => {
                t.errors.push(e.errno());
                true
            }
        };
        if end {
            break;
        }
    }
    t
}

/// Part 1: one round of two random vCPUs in `mode`.
fn random_round(kvm: &Kvm, mode: Mode, rng: &mut Rng, idt_in_mmio: bool) -> Result<Tally, String> {
    let vm: VmFd = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let ram = Ram::new(RAM);
    let rom = Ram::new(ROM);
    ram.fill(rng);
    rom.fill(rng);
    page_tables(&ram);
    let slots = [(0, 0, RAM, ram.ptr, 0), (1, ROM_GPA, ROM, rom.ptr, KVM_MEM_READONLY)];
    for (slot, gpa, size, ptr, flags) in slots {
        let r = kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: size as u64, userspace_addr: ptr as u64 };
        // SAFETY: the mappings outlive the VM (dropped after it, below).
        unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut handles = Vec::new();
    for id in 0..2 {
        let vcpu = vm.create_vcpu(id).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        set_mode(&vcpu, mode, rng, idt_in_mmio).map_err(|e| format!("setting up {mode:?}: errno {e}"))?;
        let seed = rng.next();
        handles.push(std::thread::spawn(move || run_random(vcpu, seed, deadline, 5000)));
    }
    // The VMM scribbles over guest RAM (code, stacks, page tables) and
    // signals the vCPU threads until both are done.
    while handles.iter().any(|h| !h.is_finished()) {
        for _ in 0..64 {
            let at = rng.below(RAM as u64 - 8);
            ram.write_u64(at, rng.next());
        }
        if Instant::now() >= deadline {
            for h in handles.iter().filter(|h| !h.is_finished()) {
                // SAFETY: SIGUSR1 has an empty handler; the thread is alive
                // (or just ended, which pthread_kill tolerates until join).
                unsafe { libc::pthread_kill(h.as_pthread_t(), libc::SIGUSR1) };
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut t = Tally::default();
    for h in handles {
        t.add(h.join().map_err(|_| "a vCPU thread panicked".to_string())?);
    }
    drop(vm);
    Ok(t)
}

/// Part 2: the sensitive instructions. Each case is (name, code, rax, rcx,
/// rdx, cr4 extra bits); the code is followed by HLT.
fn sensitive_cases() -> Vec<(String, Vec<u8>, u64, u64, u64, u64)> {
    let mut cases = Vec::new();
    let base_cr0: u64 = 0x8000_0031;
    for b in 0..64 {
        cases.push((format!("mov cr0, {:#x}", base_cr0 ^ (1 << b)), vec![0x0f, 0x22, 0xc0], base_cr0 ^ (1 << b), 0, 0, 0));
        cases.push((format!("mov cr4, {:#x}", (1u64 << 5) | (1 << b)), vec![0x0f, 0x22, 0xe0], (1 << 5) | (1 << b), 0, 0, 0));
        cases.push((format!("mov cr3, {:#x}", PML4 | (1 << b)), vec![0x0f, 0x22, 0xd8], PML4 | (1 << b), 0, 0, 0));
        let efer = (1u64 << 8) | (1 << 10) | (1 << b);
        cases.push((format!("wrmsr efer {efer:#x}"), vec![0x0f, 0x30], efer, 0xc000_0080, efer >> 32, 0));
        let xcr0 = 1u64 | (1 << b);
        cases.push((format!("xsetbv xcr0 {xcr0:#x}"), vec![0x0f, 0x01, 0xd1], xcr0 & 0xffff_ffff, 0, xcr0 >> 32, 1 << 18));
    }
    for v in [0u64, 1, 8, 15, 16, u64::MAX] {
        cases.push((format!("mov cr8, {v:#x}"), vec![0x44, 0x0f, 0x22, 0xc0], v, 0, 0, 0));
    }
    // MSRs that hold host state, or that would change how the CPU runs.
    let msrs: [(u32, &str); 36] = [
        (0x10, "TSC"), (0x1b, "APIC_BASE"), (0x3a, "FEATURE_CONTROL"), (0x48, "SPEC_CTRL"),
        (0x49, "PRED_CMD"), (0x79, "BIOS_UPDT_TRIG"), (0x8b, "BIOS_SIGN_ID"), (0x10b, "FLUSH_CMD"),
        (0x122, "TSX_CTRL"), (0x174, "SYSENTER_CS"), (0x175, "SYSENTER_ESP"), (0x176, "SYSENTER_EIP"),
        (0x186, "PERFEVTSEL0"), (0xc1, "PMC0"), (0x1a0, "MISC_ENABLE"), (0x1d9, "DEBUGCTL"),
        (0x277, "PAT"), (0x2ff, "MTRR_DEF_TYPE"), (0x38f, "PERF_GLOBAL_CTRL"), (0x3f1, "PEBS_ENABLE"),
        (0x480, "VMX_BASIC"), (0x570, "RTIT_CTL"), (0x600, "DS_AREA"), (0x6a0, "U_CET"),
        (0x6a2, "S_CET"), (0x6e0, "TSC_DEADLINE"), (0xda0, "XSS"), (0xc000_0080, "EFER"),
        (0xc000_0081, "STAR"), (0xc000_0082, "LSTAR"), (0xc000_0083, "CSTAR"), (0xc000_0084, "FMASK"),
        (0xc000_0100, "FS_BASE"), (0xc000_0101, "GS_BASE"), (0xc000_0102, "KERNEL_GS_BASE"), (0xc000_0103, "TSC_AUX"),
    ];
    for (msr, name) in msrs {
        for v in [0u64, 1, 0xffff_8000_0000_1000, u64::MAX] {
            // WRMSR; RDMSR.
            cases.push((format!("wrmsr+rdmsr {name} {v:#x}"), vec![0x0f, 0x30, 0x0f, 0x32], v & 0xffff_ffff, u64::from(msr), v >> 32, 0));
        }
    }
    for n in 0..8u8 {
        for v in [0u64, 0x1000, u64::MAX, 0xffff_0fff] {
            // MOV DRn, RAX; MOV RAX, DRn; then a store to 0x1000, where
            // DR0 = 0x1000 with DR7 = all ones would break.
            cases.push((
                format!("mov dr{n}, {v:#x}; mov rax, dr{n}; store"),
                vec![0x0f, 0x23, 0xc0 | (n << 3), 0x0f, 0x21, 0xc0 | (n << 3), 0x88, 0x04, 0x25, 0x00, 0x10, 0x00, 0x00],
                v,
                0,
                0,
                0,
            ));
        }
    }
    cases.push(("wbinvd".into(), vec![0x0f, 0x09], 0, 0, 0, 0));
    cases.push(("invd".into(), vec![0x0f, 0x08], 0, 0, 0, 0));
    cases.push(("wrpkru".into(), vec![0x0f, 0x01, 0xef], 0xffff_fffc, 0, 0, 0));
    cases.push(("rdpkru".into(), vec![0x0f, 0x01, 0xee], 0, 0, 0, 0));
    cases.push(("monitor; mwait".into(), vec![0x0f, 0x01, 0xc8, 0x0f, 0x01, 0xc9], 0x1000, 0, 0, 0));
    cases.push(("rdpmc".into(), vec![0x0f, 0x33], 0, 0, 0, 0));
    // Garbage FPU state: RAX points at random bytes at 0x8000.
    cases.push(("xrstor garbage".into(), vec![0x48, 0x0f, 0xae, 0x28], 0x8000, 0, u64::MAX, 1 << 18));
    cases.push(("fxrstor garbage".into(), vec![0x48, 0x0f, 0xae, 0x08], 0x8000, 0, 0, 0));
    cases.push(("ldmxcsr garbage".into(), vec![0x0f, 0xae, 0x10], 0x8000, 0, 0, 0));
    cases
}

/// Runs every sensitive case; returns the outcome of each, one per line.
fn sensitive(kvm: &Kvm, rng: &mut Rng) -> Result<Vec<String>, String> {
    let vm: VmFd = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    let ram = Ram::new(RAM);
    let r = kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: RAM as u64, userspace_addr: ram.ptr as u64 };
    // SAFETY: the mapping outlives the VM.
    unsafe { vm.set_user_memory_region(r) }.map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    page_tables(&ram);
    let mut vcpu = vm.create_vcpu(0).map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    if kvm.check_extension(kvm_ioctls::Cap::ExtCpuid) {
        let mut cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(|e| format!("{e}"))?;
        for e in cpuid.as_mut_slice() {
            if e.function == 1 {
                e.ecx = (e.ecx & !(1 << 5)) | (1 << 31);
            }
        }
        vcpu.set_cpuid2(&cpuid).map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    }
    let mut out = Vec::new();
    for (name, code, rax, rcx, rdx, cr4) in sensitive_cases() {
        let mut rnd = [0u8; 512];
        for c in rnd.chunks_mut(8) {
            c.copy_from_slice(&rng.next().to_le_bytes());
        }
        ram.write(0x8000, &rnd);
        ram.write(0x2000, &code);
        ram.write(0x2000 + code.len() as u64, &[0xf4]);
        let mut s: kvm_sregs = vcpu.get_sregs().map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        s.cs = seg(8, 11, 1, 0);
        s.ds = seg(16, 3, 0, 1);
        s.es = s.ds;
        s.ss = s.ds;
        s.cr0 = 0x8000_0031;
        s.cr3 = PML4;
        s.cr4 = (1 << 5) | (1 << 9) | cr4;
        s.efer = (1 << 8) | (1 << 10);
        // No IDT: any fault is a triple fault (a shutdown exit).
        s.idt.base = 0;
        s.idt.limit = 0;
        let outcome = if let Err(e) = vcpu.set_sregs(&s) {
            format!("KVM_SET_SREGS errno {}", e.errno())
        } else {
            let regs = kvm_regs { rax, rcx, rdx, rip: 0x2000, rsp: 0x9000, rflags: 2, ..Default::default() };
            vcpu.set_regs(&regs).map_err(|e| format!("KVM_SET_REGS: {e}"))?;
            match vcpu.run() {
                Ok(VcpuExit::Hlt) => "done".to_string(),
                Ok(VcpuExit::Shutdown) => "fault (triple fault)".to_string(),
                Ok(VcpuExit::InternalError) => "internal error".to_string(),
                Ok(VcpuExit::FailEntry(r, _)) => format!("failed entry {r:#x}"),
                Ok(other) => format!("exit {other:?}"),
                Err(e) => format!("KVM_RUN errno {}", e.errno()),
            }
        };
        out.push(format!("{name}: {outcome}"));
    }
    Ok(out)
}

/// The VMM's own state that a guest must not reach.
#[derive(Debug, PartialEq)]
struct VmmState {
    canary: u64,
    fs_base: u64,
    gs_base: u64,
    ldt: Vec<u8>,
    mxcsr: u32,
    fpu_cw: u16,
    xcr0: Option<u64>,
    pkru: Option<u32>,
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn vmm_state(canary: &[u64]) -> VmmState {
    let mut fs = 0u64;
    let mut gs = 0u64;
    // SAFETY: ARCH_GET_FS/GS write one u64 each.
    unsafe {
        libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs as *mut u64);
        libc::syscall(libc::SYS_arch_prctl, 0x1004, &mut gs as *mut u64);
    }
    let mut ldt = vec![0u8; 64];
    // SAFETY: modify_ldt(0) reads up to 64 bytes of our LDT into `ldt`.
    let n = unsafe { libc::syscall(libc::SYS_modify_ldt, 0, ldt.as_mut_ptr(), ldt.len()) };
    ldt.truncate(n.max(0) as usize);
    let mut mxcsr = 0u32;
    let mut cw = 0u16;
    // SAFETY: store MXCSR and the x87 control word into locals.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr);
        std::arch::asm!("fnstcw [{}]", in(reg) &mut cw);
    }
    let osxsave = cpuid(1, 0)[2] & (1 << 27) != 0;
    let ospke = cpuid(0, 0)[0] >= 7 && cpuid(7, 0)[2] & (1 << 4) != 0;
    let xcr0 = osxsave.then(|| {
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV(0) is allowed at CPL 3 when CR4.OSXSAVE is set.
        unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi) };
        u64::from(hi) << 32 | u64::from(lo)
    });
    let pkru = ospke.then(|| {
        let v: u32;
        // SAFETY: RDPKRU is allowed when CR4.PKE is set.
        unsafe { std::arch::asm!("rdpkru", in("ecx") 0, out("eax") v, out("edx") _) };
        v
    });
    VmmState {
        canary: canary.iter().fold(0u64, |a, &x| a.rotate_left(5) ^ x),
        fs_base: fs,
        gs_base: gs,
        ldt,
        // The exception flags (bits 5:0) are sticky status, which the
        // test's own floating-point work sets; the controls must stay.
        mxcsr: mxcsr & !0x3f,
        fpu_cw: cw,
        xcr0,
        pkru,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| "/dev/rvmx".into());
    let rounds: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(40);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1)
    });
    let is_kvm = path.ends_with("kvm");
    println!("# hostile {path} {rounds} {seed} (the last number is the seed: pass it to reproduce)");
    let kvm = Kvm::new_with_path(CString::new(path.clone()).unwrap()).expect("open device");
    install_empty_handler(libc::SIGUSR1);
    let mut rng = Rng(seed | 1);
    // The random-code part runs on rvmx only (see the top of this file).
    let mut t = Tap::plan(if is_kvm { 4 } else { 6 });

    // The VMM's state before: a canary, an LDT entry (a 32-bit data
    // segment), a distinctive MXCSR and x87 control word, a watchpoint.
    let canary: Vec<u64> = (0..8192).map(|_| rng.next()).collect();
    let desc: [u32; 4] = [7, 0x1234_0000, 0xfffff, 0x51]; // entry 7, base, limit, seg_32bit|useable
    // SAFETY: modify_ldt(1) reads one user_desc (16 bytes).
    let ldt_ok = unsafe { libc::syscall(libc::SYS_modify_ldt, 1, desc.as_ptr(), 16) } == 0;
    let mxcsr: u32 = 0x9fc0;
    let cw: u16 = 0x027f;
    // SAFETY: loads a valid MXCSR (FTZ, DAZ, all exceptions masked) and x87
    // control word (53-bit precision, all masked).
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr);
        std::arch::asm!("fldcw [{}]", in(reg) &cw);
    }
    let before = vmm_state(&canary);
    let watched: *mut u64 = Box::into_raw(Box::new(0u64));
    let wp = watchpoint(watched);

    // 1. Random code.
    let modes = [Mode::Real, Mode::Protected, Mode::Pae, Mode::Long];
    if is_kvm {
        println!("# random code: not run on KVM (Bochs 2.7 lets a guest's CLI loop keep the CPU under KVM)");
    } else {
        let t0 = Instant::now();
        let mut all = Tally::default();
        let mut setup_err = None;
        for round in 0..rounds {
            let mode = modes[round as usize % 4];
            match random_round(&kvm, mode, &mut rng, round / 4 % 2 == 1) {
                Ok(tally) => all.add(tally),
                Err(e) => {
                    setup_err = Some(format!("round {round} ({mode:?}): {e}"));
                    break;
                }
            }
        }
        let total: u64 = all.counts.values().sum();
        println!("# random code: {rounds} VMs x 2 vCPUs in {:.1} s, {total} exits to userspace:", t0.elapsed().as_secs_f64());
        for (k, v) in &all.counts {
            println!("#   {k}: {v}");
        }
        t.check(
            setup_err.is_none() && all.errors.is_empty(),
            &format!("random code in real, protected, PAE and long mode: {rounds} VMs of 2 vCPUs, every KVM_RUN returned"),
            format!("{setup_err:?}; KVM_RUN errors {:?}", all.errors),
        );
        // A VM entry the CPU refused must break a rule rvmx's checker
        // knows (vmcs/checks.rs): otherwise rvmx made a state it cannot
        // explain, or the checker misses a rule.
        let failed: u64 = all.counts.iter().filter(|(k, _)| k.starts_with("failed entry")).map(|(_, v)| v).sum();
        let unnamed: u64 = all.counts.iter().filter(|(k, _)| k.contains("no rule named")).map(|(_, v)| v).sum();
        t.check(unnamed == 0, &format!("every failed VM entry of the random code ({failed}) is named by the entry checker"), format!("{unnamed} not named"));
    }

    // 2. Sensitive instructions.
    let t0 = Instant::now();
    match sensitive(&kvm, &mut rng) {
        Ok(lines) => {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            for l in &lines {
                *by.entry(l.rsplit(": ").next().unwrap_or("").to_string()).or_default() += 1;
            }
            println!("# sensitive instructions: {} cases in {:.1} s: {by:?}", lines.len(), t0.elapsed().as_secs_f64());
            let dev = path.rsplit('/').next().unwrap_or("dev");
            let _ = std::fs::write(format!("/tmp/hostile.{dev}.txt"), lines.join("\n") + "\n");
            let errs: Vec<&String> = lines.iter().filter(|l| l.contains("errno")).collect();
            t.check(errs.is_empty(), &format!("{} sensitive instructions (CR0/3/4/8, EFER, XCR0 bits, host MSRs, debug registers, WBINVD, WRPKRU, garbage FPU state) each ran to HLT or a fault", lines.len()), format!("{errs:?}"));
        }
        Err(e) => t.check(false, "sensitive instructions", e),
    }

    // 3. The VMM's state is its own.
    let after = vmm_state(&canary);
    t.check(ldt_ok && before == after, "the VMM's canary, FS/GS bases, LDT, MXCSR, x87 CW, XCR0 and PKRU are unchanged", format!("ldt set {ldt_ok}; before {before:?}; after {after:?}"));
    match before.pkru {
        Some(_) => println!("# PKRU checked"),
        None => println!("# PKRU not checked: this CPU has no protection keys (CPUID.7.ECX.OSPKE = 0)"),
    }
    match wp {
        Ok(fd) => {
            let n0 = read_count(fd);
            // SAFETY: a volatile store to our own (leaked) box, watched
            // by a debug register.
            unsafe { std::ptr::write_volatile(watched, 42) };
            let n1 = read_count(fd);
            t.check(n1 == n0 + 1, "a hardware watchpoint the VMM set on itself still fires (its DR0-DR7 are back)", format!("count {n0} -> {n1}"));
        }
        Err(e) => t.check(false, "a hardware watchpoint the VMM set on itself still fires", format!("perf_event_open: errno {e}")),
    }
    // 4. The device still runs a guest.
    let ok = kvm.create_vm().and_then(|vm| vm.create_vcpu(0)).is_ok();
    t.check(ok, "the device still creates VMs and vCPUs afterwards", "");
    t.finish();
}
