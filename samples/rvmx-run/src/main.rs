//! rvmx-run: start a small guest on /dev/rvmx (or any KVM device) and watch
//! its VM exits come back.
//!
//!     rvmx-run [--device PATH] [--mode real|prot32|long] [--mem MiB]
//!              [--vcpus N] [--load ADDR] [--quiet] [--stats] [--trace] GUEST
//!
//! GUEST is an ELF file (its PT_LOAD segments go to their physical
//! addresses, execution starts at its entry point) or a flat binary (loaded
//! at --load, default 0x1000, and started there). The vCPU starts in the
//! mode given: real mode (CS=0), 32-bit protected mode (flat segments), or
//! 64-bit long mode (flat segments, the first GiB identity-mapped with 2 MiB
//! pages, at 0x9000-0xbfff). RSP starts at 0x80000 (grows down).
//!
//! With --vcpus N (1-64) the guest is an SMP machine: N vCPUs, each run by
//! its own thread, all starting at the entry point in the same mode. Each
//! learns who it is from its registers (EDI = its number, 0..N-1; ESI = N;
//! its stack starts 4 KiB lower per number) or from CPUID (leaf 1's APIC
//! ID). The vCPU threads move freely between the host's CPUs.
//!
//! What the guest can talk to (the "devices" of this tiny machine):
//! - a 16550 UART at ports 0x3f8-0x3ff (vm-superio), printed to stdout;
//! - the exit port 0xf4: writing byte N ends the run with exit status N;
//! - a test MMIO device at 0xd000_0000 (one page): offset 0 reads as
//!   0x58_4d_56_52 ("RVMX"), any other offset reads back what was written;
//! - hypercalls (VMCALL): nr 1 prints RBX in hex and returns 0; others
//!   return -1000 (KVM's -KVM_ENOSYS). On /dev/kvm, KVM answers VMCALL in
//!   the kernel instead (see the README);
//! - HLT ends the vCPU that executes it (there are no interrupts to wait
//!   for); the run ends with status 0 when every vCPU has halted.
//!
//! At the end, a summary of the exits by reason goes to stderr (and, on
//! rvmx, how many VM exits the kernel handled without coming to userspace,
//! read from rvmx's exit-information page).
//!
//! --stats adds, at the end, the VM exits by VMX exit reason from the
//! vCPUs' statistics files (KVM_GET_STATS_FD): count, share of the exits,
//! share of the host time from exit to next entry, and a bar (on KVM:
//! KVM's own exit counters). --trace (rvmx only) prints each exit to
//! userspace as it happens: the KVM exit, the VMX exit behind it with its
//! qualification decoded (port, size and direction for I/O; access and
//! guest-physical address for EPT violations; register for CR accesses),
//! and before it the exits the kernel handled since the last one.

use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::sync::Mutex;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vm_superio::{Serial, Trigger};

/// The SDM's VM-entry checks: the module's own file, compiled here to turn
/// the check number rvmx reports after a failed entry into words.
// The control bits vmcs/checks.rs tests (`super::controls` there).
#[allow(dead_code)]
#[path = "../../../vmcs/controls.rs"]
mod controls;
#[allow(dead_code)]
#[path = "../../../vmcs/checks.rs"]
mod checks;
mod stats;
/// The module's types for exit qualifications (pure code, shared).
#[allow(dead_code)]
#[path = "../../../vmcs/qualification.rs"]
mod qualification;

const SERIAL_BASE: u16 = 0x3f8;
const EXIT_PORT: u16 = 0xf4;
const MMIO_BASE: u64 = 0xd000_0000;
const MMIO_ID: u32 = 0x584d_5652; // "RVMX"
const STACK_TOP: u64 = 0x80000;
const PML4: u64 = 0x9000;
/// rvmx's exit-information page (uapi/rvmx.h: RVMX_EXIT_INFO_PAGE_OFFSET).
const RVMX_EXIT_INFO_PAGE: i64 = 3;

/// The serial port raises no interrupt: rvmx emulates no interrupt
/// controller, and the sample guests poll.
struct NoIrq;
impl Trigger for NoIrq {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Real,
    Prot32,
    Long,
}

struct Options {
    device: String,
    mode: Mode,
    mem_mib: usize,
    vcpus: u64,
    load: u64,
    quiet: bool,
    stats: bool,
    trace: bool,
    guest: String,
}

fn usage() -> ! {
    eprintln!("usage: rvmx-run [--device PATH] [--mode real|prot32|long] [--mem MiB] [--vcpus N] [--load ADDR] [--quiet] [--stats] [--trace] GUEST");
    std::process::exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("rvmx-run: {msg}");
    std::process::exit(2)
}

fn parse_num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_args() -> Options {
    let mut o = Options { device: "/dev/rvmx".into(), mode: Mode::Real, mem_mib: 16, vcpus: 1, load: 0x1000, quiet: false, stats: false, trace: false, guest: String::new() };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--device" => o.device = val(),
            "--mode" => {
                o.mode = match val().as_str() {
                    "real" => Mode::Real,
                    "prot32" => Mode::Prot32,
                    "long" => Mode::Long,
                    m => fail(format!("unknown mode {m:?} (real, prot32 or long)")),
                }
            }
            "--mem" => o.mem_mib = parse_num(&val()).filter(|&m| (2..=2048).contains(&m)).unwrap_or_else(|| fail("--mem takes 2..2048 (MiB)")) as usize,
            "--vcpus" => o.vcpus = parse_num(&val()).filter(|&n| (1..=64).contains(&n)).unwrap_or_else(|| fail("--vcpus takes 1..64")),
            "--load" => o.load = parse_num(&val()).unwrap_or_else(|| fail("--load takes an address")),
            "--quiet" => o.quiet = true,
            "--stats" => o.stats = true,
            "--trace" => o.trace = true,
            "-h" | "--help" => usage(),
            _ if a.starts_with('-') => fail(format!("unknown option {a}")),
            _ if o.guest.is_empty() => o.guest = a,
            _ => usage(),
        }
    }
    if o.guest.is_empty() {
        usage();
    }
    o
}

/// Loads GUEST into guest memory and returns the entry point. A minimal
/// ELF reader (PT_LOAD segments of 32- and 64-bit little-endian ELF files):
/// rust-vmm's linux-loader loads Linux kernels with their boot protocols,
/// more than a flat sample guest needs.
fn load_guest(mem: &GuestMemoryMmap, image: &[u8], load: u64) -> u64 {
    let le16 = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as u64;
    let le32 = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap()) as u64;
    let le64 = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap());
    let put = |gpa: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(gpa))
            .unwrap_or_else(|_| fail(format!("the guest does not fit in guest memory at {gpa:#x}")))
    };
    if image.len() < 52 || &image[..4] != b"\x7fELF" {
        put(load, image);
        return load;
    }
    let is64 = image[4] == 2;
    if image[5] != 1 || (is64 && image.len() < 64) {
        fail("not a little-endian ELF file");
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (le64(24), le64(32), le16(54), le16(56))
    } else {
        (le32(24), le32(28), le16(42), le16(44))
    };
    let mut loaded = 0;
    for i in 0..phnum {
        let ph = phoff.saturating_add(i * phentsize).min(image.len() as u64) as usize;
        if ph + if is64 { 56 } else { 32 } > image.len() {
            fail("truncated ELF program headers");
        }
        let (ptype, off, paddr, filesz) = if is64 {
            (le32(ph), le64(ph + 8), le64(ph + 24), le64(ph + 32))
        } else {
            (le32(ph), le32(ph + 4), le32(ph + 12), le32(ph + 16))
        };
        if ptype != 1 {
            continue; // not PT_LOAD
        }
        let seg = off.checked_add(filesz).and_then(|end| image.get(off as usize..end as usize))
            .unwrap_or_else(|| fail("truncated ELF segment"));
        put(paddr, seg);
        loaded += 1;
    }
    if loaded == 0 {
        fail("ELF file without loadable segments");
    }
    entry
}

fn flat_segment(selector: u16, code: bool, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 11 } else { 3 },
        present: 1,
        dpl: 0,
        db: u8::from(!(code && long)),
        s: 1,
        l: u8::from(code && long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Registers and system registers for the chosen mode; vCPU `id` of `n`.
fn setup_vcpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, mode: Mode, entry: u64, id: u64, n: u64) {
    let mut s = vcpu.get_sregs().unwrap_or_else(|e| fail(format!("KVM_GET_SREGS: {e}")));
    match mode {
        Mode::Real => {
            if entry > 0xffff {
                fail("real mode needs an entry point below 64 KiB");
            }
            s.cs.selector = 0;
            s.cs.base = 0;
        }
        Mode::Prot32 | Mode::Long => {
            let long = mode == Mode::Long;
            s.cs = flat_segment(0x08, true, long);
            s.ds = flat_segment(0x10, false, long);
            s.es = s.ds;
            s.fs = s.ds;
            s.gs = s.ds;
            s.ss = s.ds;
            s.cr0 = 0x11 | (1 << 5); // PE, ET, NE
            if long {
                // Identity-map the first GiB: PML4 -> PDPT -> 512 2 MiB pages,
                // present, writable and user-accessible (bits 0-2; bit 7 in
                // the PD entries: 2 MiB pages), so the guest can run ring 3.
                let w = |gpa: u64, v: u64| mem.write_obj(v, GuestAddress(gpa)).unwrap_or_else(|_| fail("guest memory too small for page tables"));
                w(PML4, (PML4 + 0x1000) | 7);
                w(PML4 + 0x1000, (PML4 + 0x2000) | 7);
                for i in 0..512 {
                    w(PML4 + 0x2000 + i * 8, (i << 21) | 0x87);
                }
                s.cr3 = PML4;
                s.cr4 = 1 << 5; // PAE
                s.efer = (1 << 8) | (1 << 10); // LME, LMA
                s.cr0 |= 1 << 31; // PG
            }
        }
    }
    vcpu.set_sregs(&s).unwrap_or_else(|e| fail(format!("KVM_SET_SREGS: {e}")));
    let regs = kvm_regs { rip: entry, rsp: STACK_TOP - id * 0x1000, rflags: 2, rdi: id, rsi: n, ..Default::default() };
    vcpu.set_regs(&regs).unwrap_or_else(|e| fail(format!("KVM_SET_REGS: {e}")));
}

/// rvmx's exit-information page (uapi/rvmx.h, struct rvmx_exit_info).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RvmxExitInfo {
    basic_reason: u32,
    full_reason: u32,
    qualification: u64,
    guest_physical_address: u64,
    guest_linear_address: u64,
    instruction_len: u32,
    instruction_info: u32,
    intr_info: u32,
    intr_error_code: u32,
    guest_rip: u64,
    exits: u64,
    vm_instruction_error: u32,
    entry_check: u16,
    entry_segment: u8,
    pad: u8,
    entry_value: u64,
}

/// After KVM_EXIT_FAIL_ENTRY on rvmx: the SDM check the VMCS broke, which
/// rvmx puts in the exit union after KVM's two fail_entry fields (uapi/
/// rvmx.h, struct rvmx_fail_entry: check at byte 12, segment at 14, the
/// field's value at 16).
fn explain_failed_entry(vcpu: &mut VcpuFd) {
    let r = vcpu.get_kvm_run();
    // SAFETY: the exit union is 256 plain bytes; any bit pattern is valid.
    let u: [u8; 256] = unsafe { std::mem::transmute(r.__bindgen_anon_1) };
    let check = u16::from_ne_bytes([u[12], u[13]]);
    let value = u64::from_ne_bytes(u[16..24].try_into().unwrap());
    match checks::Check::from_number(check) {
        Some(c) => {
            let seg = checks::Seg::from_number(u[14]).map_or(String::new(), |s| format!(" for {}", s.name()));
            eprintln!("rvmx-run: the VMCS breaks check {check} (SDM Vol. 3C {}){seg}: {}", c.section(), c.rule());
            eprintln!("rvmx-run:   the field's value: {value:#x}");
        }
        None => eprintln!("rvmx-run: rvmx found no broken rule among the checks it knows"),
    }
}

/// --trace: for one vCPU, each exit to userspace as one line, with the VMX
/// exit behind it (rvmx's exit-information page, its qualification
/// decoded), after the exits the kernel handled since the last one (the
/// per-reason counters of the vCPU's statistics file, as deltas).
struct Tracer {
    id: usize,
    info: *const RvmxExitInfo,
    stats_fd: i32,
    last: BTreeMap<u32, u64>,
}

// SAFETY: `info` points at a read-only mapping that lives as long as the
// process; only the vCPU's own thread reads it.
unsafe impl Send for Tracer {}

impl Tracer {
    fn after_exit(&mut self, kvm_exit: &str) {
        // SAFETY: the page stays mapped for the process's life; a volatile
        // read of plain integers the kernel wrote before KVM_RUN returned.
        let i = unsafe { self.info.read_volatile() };
        let now: BTreeMap<u32, u64> = match stats::read(self.stats_fd) {
            Ok(s) => s.values.iter().filter_map(|(k, v)| Some((k.strip_prefix("exit_reason_")?.parse().ok()?, *v))).collect(),
            Err(e) => return eprintln!("rvmx-run: --trace: {e}"),
        };
        let mut between: Vec<String> = Vec::new();
        for (r, n) in &now {
            let mut d = n.saturating_sub(self.last.get(r).copied().unwrap_or(0));
            if *r == i.basic_reason {
                d = d.saturating_sub(1); // the exit that came to userspace
            }
            if d > 0 {
                between.push(format!("{} x{d}", stats::exit_reason_name(*r)));
            }
        }
        self.last = now;
        if !between.is_empty() {
            eprintln!("[vcpu {}]   in the kernel: {}", self.id, between.join(", "));
        }
        let name = kvm_exit.split(['(', ' ']).next().unwrap_or(kvm_exit);
        eprintln!("[vcpu {}] KVM_EXIT {name}: VMX exit {} ({}){} at RIP {:#x}", self.id, i.basic_reason, stats::exit_reason_name(i.basic_reason), decode_qualification(&i), i.guest_rip);
    }
}

/// The exit qualification of the exits that reach userspace, in words
/// (SDM Vol. 3C §28.2.1, tables 28-3 to 28-7), with the module's own types
/// for them (vmcs/qualification.rs).
fn decode_qualification(i: &RvmxExitInfo) -> String {
    use qualification::{CrAccess, CrQual, EptQual, IoQual};
    let q = i.qualification;
    match i.basic_reason {
        30 => {
            let q = IoQual(q);
            let dir = if q.is_in() { "IN" } else { "OUT" };
            let string = if q.string() { "S" } else { "" };
            let rep = if q.rep() { "REP " } else { "" };
            format!(": {rep}{dir}{string} port {:#x}, {} byte(s)", q.port(), q.size())
        }
        48 => {
            let q = EptQual(q);
            let access: Vec<&str> = [(q.read(), "read"), (q.write(), "write"), (q.fetch(), "fetch")].iter().filter(|(on, _)| *on).map(|(_, a)| *a).collect();
            let walk = if q.in_page_walk() { " (walking the guest's page tables)" } else { "" };
            format!(": {} at guest-physical {:#x}{walk}", access.join("+"), i.guest_physical_address)
        }
        28 => {
            let q = CrQual(q);
            let kind = match q.access() {
                CrAccess::MovTo => "MOV to",
                CrAccess::MovFrom => "MOV from",
                CrAccess::Clts => "CLTS",
                CrAccess::Lmsw => "LMSW",
            };
            format!(": {kind} CR{}, register {}", q.cr(), q.gpr())
        }
        _ => String::new(),
    }
}

/// Maps rvmx's exit-information page, if the device is rvmx.
fn map_exit_info(vcpu: &VcpuFd) -> Option<*const RvmxExitInfo> {
    // SAFETY: a read-only shared mapping of one page of the vCPU fd; KVM
    // refuses or maps nothing useful, and then we do not use it.
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, vcpu.as_raw_fd(), RVMX_EXIT_INFO_PAGE * 4096)
    };
    (p != libc::MAP_FAILED).then_some(p as *const RvmxExitInfo)
}

/// The devices, shared by the vCPU threads.
struct Machine {
    serial: Serial<NoIrq, vm_superio::serial::NoEvents, std::io::Stdout>,
    mmio: BTreeMap<u64, u8>,
    exits: BTreeMap<&'static str, u64>,
}

/// How a vCPU's run ended.
#[derive(Clone, Copy)]
enum End {
    /// HLT: this vCPU is done.
    Halted,
    /// The guest wrote its exit status to the exit port (or failed): the
    /// whole machine stops with this status.
    Status(i32),
}

impl Machine {
    fn count(&mut self, what: &'static str) {
        *self.exits.entry(what).or_default() += 1;
    }

    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = if a - MMIO_BASE < 4 { MMIO_ID.to_le_bytes()[(a - MMIO_BASE) as usize] } else { *self.mmio.get(&a).unwrap_or(&0) };
        }
    }
}

/// Runs one vCPU until it halts or the guest ends or fails: KVM_RUN, then
/// whatever the exit asks of the devices (each exit takes the machine's
/// lock for as long as it needs the devices).
fn run_vcpu(machine: &Mutex<Machine>, vcpu: &mut VcpuFd, rvmx: bool, mut tracer: Option<&mut Tracer>) -> End {
    loop {
        let exit = match vcpu.run() {
            Ok(e) => {
                if let Some(t) = tracer.as_mut() {
                    t.after_exit(&format!("{e:?}"));
                }
                e
            }
            Err(e) if e.errno() == libc::EINTR => {
                machine.lock().unwrap().count("KVM_EXIT_INTR");
                continue;
            }
            Err(e) => {
                eprintln!("rvmx-run: KVM_RUN failed: {e}");
                return End::Status(2);
            }
        };
        let mut m = machine.lock().unwrap();
        match exit {
            VcpuExit::IoOut(port, data) => {
                m.count("KVM_EXIT_IO (out)");
                match port {
                    EXIT_PORT => return End::Status(i32::from(data[0])),
                    p if (SERIAL_BASE..SERIAL_BASE + 8).contains(&p) => {
                        let _ = m.serial.write((p - SERIAL_BASE) as u8, data[0]);
                        let _ = std::io::stdout().flush();
                    }
                    _ => {}
                }
            }
            VcpuExit::IoIn(port, data) => {
                m.count("KVM_EXIT_IO (in)");
                if (SERIAL_BASE..SERIAL_BASE + 8).contains(&port) {
                    data[0] = m.serial.read((port - SERIAL_BASE) as u8);
                } else {
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioRead(addr, data) => {
                m.count("KVM_EXIT_MMIO (read)");
                if (MMIO_BASE..MMIO_BASE + 4096).contains(&addr) {
                    m.mmio_read(addr, data);
                } else {
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                m.count("KVM_EXIT_MMIO (write)");
                if (MMIO_BASE..MMIO_BASE + 4096).contains(&addr) {
                    for (i, b) in data.iter().enumerate() {
                        m.mmio.insert(addr + i as u64, *b);
                    }
                }
            }
            VcpuExit::Hypercall(h) => {
                m.count("KVM_EXIT_HYPERCALL");
                *h.ret = if h.nr == 1 {
                    println!("hypercall 1: rbx = {:#x}", h.args[0]);
                    0
                } else {
                    (-1000i64) as u64
                };
            }
            VcpuExit::Hlt => {
                m.count("KVM_EXIT_HLT");
                return End::Halted;
            }
            VcpuExit::Shutdown => {
                m.count("KVM_EXIT_SHUTDOWN");
                eprintln!("rvmx-run: the guest triple-faulted (KVM_EXIT_SHUTDOWN)");
                return End::Status(3);
            }
            VcpuExit::FailEntry(reason, cpu) => {
                drop(m);
                eprintln!("rvmx-run: VM entry failed (KVM_EXIT_FAIL_ENTRY): reason {reason:#x} on CPU {cpu}");
                if rvmx {
                    explain_failed_entry(vcpu);
                }
                return End::Status(3);
            }
            VcpuExit::InternalError => {
                drop(m);
                let r = vcpu.get_kvm_run();
                // SAFETY: the `internal` member is the valid one for this exit.
                let i = unsafe { r.__bindgen_anon_1.internal };
                eprintln!("rvmx-run: KVM_EXIT_INTERNAL_ERROR: suberror {} data {:#x?}", i.suberror, &i.data[..(i.ndata as usize).min(4)]);
                return End::Status(3);
            }
            other => {
                eprintln!("rvmx-run: unexpected exit {other:?}");
                return End::Status(3);
            }
        }
    }
}

/// The CPUID table for vCPU `id`: what the device supports, without VMX (no
/// nested virtualization here), with the "hypervisor present" bit, and the
/// vCPU's number as its APIC ID, as QEMU sets it. KVM starts a vCPU with an
/// empty CPUID (no long mode) until one is set; rvmx starts with this one.
fn cpuid_for(kvm: &Kvm, id: u64) -> kvm_bindings::CpuId {
    let mut cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap_or_else(|e| fail(format!("KVM_GET_SUPPORTED_CPUID: {e}")));
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ecx = (e.ecx & !(1 << 5)) | (1 << 31);
                e.ebx = (e.ebx & 0x00ff_ffff) | ((id as u32) << 24);
            }
            0xb | 0x1f => e.edx = id as u32,
            _ => {}
        }
    }
    cpuid
}

fn main() {
    let o = parse_args();
    let image = std::fs::read(&o.guest).unwrap_or_else(|e| fail(format!("{}: {e}", o.guest)));
    if image.is_empty() {
        fail(format!("{}: empty file", o.guest));
    }
    let kvm = Kvm::new_with_path(CString::new(o.device.clone()).unwrap_or_else(|_| fail("bad device path")))
        .unwrap_or_else(|e| fail(format!("{}: {e}", o.device)));
    let vm = kvm.create_vm().unwrap_or_else(|e| fail(format!("KVM_CREATE_VM: {e}")));
    let mem: GuestMemoryMmap = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), o.mem_mib << 20)])
        .unwrap_or_else(|e| fail(format!("guest memory: {e}")));
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: mem.get_host_address(region.start_addr()).unwrap() as u64,
        };
        // SAFETY: the region's memory lives in `mem` until the process ends.
        unsafe { vm.set_user_memory_region(r) }.unwrap_or_else(|e| fail(format!("KVM_SET_USER_MEMORY_REGION: {e}")));
    }
    let entry = load_guest(&mem, &image, o.load);
    let mut vcpus = Vec::new();
    for id in 0..o.vcpus {
        let vcpu = vm.create_vcpu(id).unwrap_or_else(|e| fail(format!("KVM_CREATE_VCPU: {e}")));
        if kvm.check_extension(kvm_ioctls::Cap::ExtCpuid) {
            vcpu.set_cpuid2(&cpuid_for(&kvm, id)).unwrap_or_else(|e| fail(format!("KVM_SET_CPUID2: {e}")));
        }
        setup_vcpu(&vcpu, &mem, o.mode, entry, id, o.vcpus);
        vcpus.push(vcpu);
    }
    let infos: Vec<_> = vcpus.iter().filter_map(map_exit_info).collect();
    // --stats: each vCPU's statistics file, opened now (read at the end).
    let stat_fds: Vec<i32> = if o.stats {
        vcpus.iter().map(|v| stats::open(v.as_raw_fd()).unwrap_or_else(|e| fail(e))).collect()
    } else {
        Vec::new()
    };
    // The extra fail_entry bytes and the info page are rvmx's (on KVM the
    // page maps but faults).
    let rvmx = o.device != "/dev/kvm" && !infos.is_empty();
    // --trace: per vCPU, its exit-information page and statistics file.
    if o.trace && !rvmx {
        fail("--trace reads rvmx's exit-information page: it needs /dev/rvmx");
    }
    let mut tracers: Vec<Option<Tracer>> = if o.trace {
        vcpus.iter().zip(&infos).enumerate().map(|(id, (v, info))| {
            let fd = stats::open(v.as_raw_fd()).unwrap_or_else(|e| fail(e));
            Some(Tracer { id, info: *info, stats_fd: fd, last: BTreeMap::new() })
        }).collect()
    } else {
        vcpus.iter().map(|_| None).collect()
    };

    // One thread per vCPU. The first vCPU to end the guest (exit port,
    // failure) ends the process with its status, after the summary; if all
    // halt, the status is 0.
    let machine = Mutex::new(Machine { serial: Serial::new(NoIrq, std::io::stdout()), mmio: BTreeMap::new(), exits: BTreeMap::new() });
    let _: () = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for (mut vcpu, mut tracer) in vcpus.into_iter().zip(tracers.drain(..)) {
            let (tx, machine) = (tx.clone(), &machine);
            s.spawn(move || {
                let end = run_vcpu(machine, &mut vcpu, rvmx, tracer.as_mut());
                let _ = tx.send(end);
                // A vCPU thread whose guest ended waits here for the process
                // to exit rather than dropping its vCPU under the others.
                if !matches!(end, End::Halted) {
                    loop {
                        std::thread::park();
                    }
                }
            });
        }
        drop(tx);
        let mut halted = 0;
        let status = loop {
            match rx.recv() {
                Ok(End::Halted) => {
                    halted += 1;
                    if halted == o.vcpus {
                        break 0;
                    }
                }
                Ok(End::Status(st)) => break st,
                Err(_) => break 0,
            }
        };
        summary(&o, &machine, &infos, status);
        if o.stats {
            print_stats(&stat_fds);
        }
        std::process::exit(status)
    });
}

/// The exit summary on stderr.
/// --stats: the VM exits of all vCPUs by VMX basic exit reason, from the
/// statistics files (rvmx's exit_reason_N and exit_reason_N_cycles
/// counters), with each reason's share of the exits and of the host time
/// from exit to next entry; on KVM, which has no per-reason counters,
/// KVM's named exit counters.
fn print_stats(fds: &[i32]) {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for fd in fds {
        match stats::read(*fd) {
            Ok(s) => {
                ids.push(s.id);
                for (k, v) in s.values {
                    *total.entry(k).or_default() += v;
                }
            }
            Err(e) => return eprintln!("rvmx-run: reading statistics: {e}"),
        }
    }
    let mut by_reason: Vec<(u32, u64)> = total
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("exit_reason_")?.parse().ok()?, *v)))
        .filter(|(_, v)| *v > 0)
        .collect();
    let all = total.get("exits").copied().unwrap_or(0);
    let cycles = |n: u32| total.get(&format!("exit_reason_{n}_cycles")).copied().unwrap_or(0);
    let all_cycles: u64 = by_reason.iter().map(|(n, _)| cycles(*n)).sum();
    eprintln!("rvmx-run: VM exits from the statistics files (KVM_GET_STATS_FD) {}: {all}", ids.join(", "));
    if by_reason.is_empty() {
        for k in ["exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "irq_window_exits", "hypercalls", "signal_exits"] {
            if let Some(v) = total.get(k) {
                eprintln!("  {k:<24} {v:>10}");
            }
        }
        return;
    }
    by_reason.sort_by_key(|r| std::cmp::Reverse(r.1));
    // "time": the share of host time from each exit to the next entry
    // (userspace's time included for exits to userspace); the bar shows it.
    eprintln!("  {:>3}  {:<28} {:>10} {:>6} {:>6}", "#", "VMX exit reason", "count", "exits", "time");
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    for (n, v) in by_reason {
        let time = pct(cycles(n), all_cycles);
        let bar = "#".repeat((time / 2.5).round() as usize);
        eprintln!("  {n:>3}  {:<28} {v:>10} {:>5.1}% {time:>5.1}% {bar}", stats::exit_reason_name(n), pct(v, all));
    }
}

fn summary(o: &Options, machine: &Mutex<Machine>, infos: &[*const RvmxExitInfo], status: i32) {
    let _ = std::io::stdout().flush();
    let m = machine.lock().unwrap_or_else(|e| e.into_inner());
    if !o.quiet {
        let user: u64 = m.exits.values().sum();
        eprintln!("rvmx-run: guest ended with status {status}; exits to userspace by reason:");
        for (what, n) in &m.exits {
            eprintln!("  {what:<24} {n}");
        }
        if o.device != "/dev/kvm" && !infos.is_empty() {
            // SAFETY: the pages are mapped read-only for the process's life.
            let all: Vec<RvmxExitInfo> = infos.iter().map(|p| unsafe { p.read_volatile() }).collect();
            let exits: u64 = all.iter().map(|i| i.exits).sum();
            eprintln!("  VM exits in all (rvmx):  {} ({} handled in the kernel)", exits, exits.saturating_sub(user));
            let i = &all[0];
            eprintln!("  vCPU 0's last VM exit: VMX basic reason {}, qualification {:#x}, at RIP {:#x}", i.basic_reason, i.qualification, i.guest_rip);
        }
    }
}
