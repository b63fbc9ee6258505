//! Tracepoints: rvmx's (rvmx:rvmx_entry, rvmx_exit, rvmx_userspace_exit,
//! rvmx_inject) on /dev/rvmx, KVM's (kvm:kvm_entry, kvm_exit,
//! kvm_userspace_exit, kvm_inj_virq) on /dev/kvm. Enables them in tracefs
//! and counts the exit event with perf (perf_event_open, as `perf stat -e`
//! does), runs a guest with a known sequence of exits, then checks the
//! trace: entries and exits alternate, the exits the guest makes on
//! purpose appear in order with their reason, RIP and (rvmx) I/O
//! qualification, every return to userspace is there with its
//! kvm_run.exit_reason, the injected interrupt is there, and perf counted
//! as many exits as the trace holds. Prints TAP.

use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{ioctl, Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;

const TRACING: &str = "/sys/kernel/tracing";

/// The guest, in real mode: CPUID at 0x1000 (in-kernel exit), OUT to port
/// 0x80, an MMIO read at 0xd0000, STI, HLT; the interrupt the test injects
/// then (vector 0x20, handler at 0x2000) does OUT to 0x81 and IRET, and
/// the guest halts again.
fn guest(vm: &TestVm) {
    vm.write(0x80, &[0x00, 0x20, 0x00, 0x00]); // IVT[0x20] = 0000:2000
    vm.write(0x2000, &[0xe6, 0x81, 0xcf]); // out 0x81, al; iret
    vm.write(
        0x1000,
        &[
            0x0f, 0xa2, // cpuid
            0xe6, 0x80, // out 0x80, al
            0xb8, 0x00, 0xd0, 0x8e, 0xd8, // mov ax, 0xd000; mov ds, ax
            0xa1, 0x00, 0x00, // mov ax, [0]: MMIO read of 0xd0000
            0x31, 0xc0, 0x8e, 0xd8, // xor ax, ax; mov ds, ax
            0xfb, 0x90, // sti; nop
            0xf4, // hlt: the test injects vector 0x20
            0xf4, // hlt
        ],
    );
}

/// The exits to userspace the guest makes, in order (KVM_EXIT_* names).
const USERSPACE: [&str; 5] = ["KVM_EXIT_IO", "KVM_EXIT_MMIO", "KVM_EXIT_HLT", "KVM_EXIT_IO", "KVM_EXIT_HLT"];
/// The VM exits it makes on purpose (VMX names), leaving out those that
/// come from the host or from memory being mapped (below).
const EXITS: [&str; 5] = ["CPUID", "IO_INSTRUCTION", "HLT", "IO_INSTRUCTION", "HLT"];
const INCIDENTAL: [&str; 4] = ["EPT_VIOLATION", "EPT_MISCONFIG", "EXTERNAL_INTERRUPT", "PREEMPTION_TIMER"];

/// The four events' names on one device.
struct Events {
    system: &'static str,
    entry: &'static str,
    exit: &'static str,
    user: &'static str,
    inject: &'static str,
}

const RVMX: Events = Events { system: "rvmx", entry: "rvmx_entry", exit: "rvmx_exit", user: "rvmx_userspace_exit", inject: "rvmx_inject" };
const KVM: Events = Events { system: "kvm", entry: "kvm_entry", exit: "kvm_exit", user: "kvm_userspace_exit", inject: "kvm_inj_virq" };

fn write(path: &str, s: &str) -> Result<(), String> {
    std::fs::write(format!("{TRACING}/{path}"), s).map_err(|e| format!("writing {path}: {e}"))
}

/// The word after `key ` in `fields`.
fn after<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    let i = fields.find(&format!("{key} "))?;
    fields[i + key.len() + 1..].split_whitespace().next()
}

/// perf_event_attr's first 64 bytes (PERF_ATTR_SIZE_VER0): enough for a
/// counting tracepoint event.
#[repr(C)]
#[derive(Default)]
struct PerfAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// A perf counter of tracepoint `id` on this thread (any CPU).
fn perf_counter(id: u64) -> Result<i32, String> {
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    let attr = PerfAttr { kind: PERF_TYPE_TRACEPOINT, size: 64, config: id, ..Default::default() };
    // SAFETY: perf_event_open reads `attr` (64 bytes, size says so).
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const PerfAttr, 0, -1, -1, 0u64) };
    if fd < 0 {
        return Err(format!("perf_event_open: {}", std::io::Error::last_os_error()));
    }
    Ok(fd as i32)
}

fn perf_read(fd: i32) -> Option<u64> {
    let mut n = 0u64;
    // SAFETY: reads 8 bytes into `n`.
    let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
    (r == 8).then_some(n)
}

/// KVM_INTERRUPT (_IOW(KVMIO, 0x86, struct kvm_interrupt)).
const KVM_INTERRUPT: u64 = 0x4004_ae86;

/// Runs the guest to its second HLT, injecting vector 0x20 at the first.
/// Returns what went wrong, if anything.
fn run(vcpu: &mut kvm_ioctls::VcpuFd) -> Result<(), String> {
    let mut seen = Vec::new();
    loop {
        let exit = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, _)) => format!("out {port:#x}"),
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                format!("mmio {addr:#x}")
            }
            Ok(VcpuExit::Hlt) => "hlt".to_string(),
            other => return Err(format!("after {seen:?}: {other:?}")),
        };
        seen.push(exit.clone());
        if exit == "hlt" {
            if seen.len() > 3 {
                break;
            }
            let irq = 0x20u32;
            // SAFETY: KVM_INTERRUPT reads one u32 at `&irq`.
            if unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) } != 0 {
                return Err(format!("KVM_INTERRUPT: {}", std::io::Error::last_os_error()));
            }
        }
    }
    let want = ["out 0x80", "mmio 0xd0000", "hlt", "out 0x81", "hlt"];
    if seen != want {
        return Err(format!("exits {seen:?}, expected {want:?}"));
    }
    Ok(())
}

/// The launcher's reader of KVM's statistics format.
#[allow(dead_code)]
#[path = "../../../../samples/rvmx-run/src/stats.rs"]
mod reader;

fn exits_stat(vcpu: i32) -> Option<u64> {
    let fd = ioctl(vcpu, reader::KVM_GET_STATS_FD, 0).ok()?;
    let s = reader::read(fd).ok();
    // SAFETY: closes the stats fd we own.
    unsafe { libc::close(fd) };
    s?.values.get("exits").copied()
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let rvmx = !path.ends_with("kvm");
    let ev = if rvmx { &RVMX } else { &KVM };
    let mut t = Tap::plan(if rvmx { 10 } else { 8 });
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");

    if !std::path::Path::new(&format!("{TRACING}/events")).exists() {
        let (src, dir, fs) = (CString::new("nodev").unwrap(), CString::new(TRACING).unwrap(), CString::new("tracefs").unwrap());
        // SAFETY: mounts tracefs with NUL-terminated strings.
        unsafe { libc::mount(src.as_ptr(), dir.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    }
    let names = [ev.entry, ev.exit, ev.user, ev.inject];
    let missing: Vec<_> = names.iter().filter(|n| !std::path::Path::new(&format!("{TRACING}/events/{}/{n}", ev.system)).exists()).collect();
    t.check(missing.is_empty(), &format!("tracefs has events/{}/ {{{}}}", ev.system, names.join(", ")), format!("missing: {missing:?}"));

    // On: the four events, into an empty buffer; perf counts the exits.
    let on = |v: &str| -> Result<(), String> {
        for n in names {
            write(&format!("events/{}/{n}/enable", ev.system), v)?;
        }
        Ok(())
    };
    let setup = write("trace", "").and_then(|_| on("1"));
    let id = std::fs::read_to_string(format!("{TRACING}/events/{}/{}/id", ev.system, ev.exit)).ok().and_then(|s| s.trim().parse().ok());
    let perf = id.ok_or_else(|| "no event id".to_string()).and_then(perf_counter);

    let vm = TestVm::new(&kvm, 64 << 10);
    guest(&vm);
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, 0x1000);
    let before = exits_stat(vcpu.as_raw_fd());
    let ran = setup.clone().and_then(|_| run(&mut vcpu));
    let counted = perf.as_ref().ok().and_then(|&fd| perf_read(fd));
    let after_stat = exits_stat(vcpu.as_raw_fd());
    let off = on("0");
    t.check(ran.is_ok() && off.is_ok(), "the guest ran with the events on: OUT, MMIO, HLT, interrupt 0x20 injected, OUT, HLT", format!("{ran:?} {off:?}"));

    let text = std::fs::read_to_string(format!("{TRACING}/trace")).unwrap_or_default();
    // (event, fields) of each line of ours, in order.
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| names.iter().find_map(|n| l.find(&format!(" {n}: ")).map(|i| (*n, &l[i + n.len() + 3..]))))
        .collect();
    fn of<'a>(lines: &'a [(&str, &'a str)], e: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        lines.iter().filter(move |(n, _)| *n == e).map(|(_, f)| *f)
    }
    let of = |e: &'static str| of(&lines, e);

    // Every exit follows an entry, and entries and exits alternate.
    let mut expect_entry = true;
    let mut alternate = true;
    for (n, _) in &lines {
        if *n == ev.entry || *n == ev.exit {
            alternate &= (*n == ev.entry) == expect_entry;
            expect_entry = !expect_entry;
        }
    }
    let (entries, exits) = (of(ev.entry).count(), of(ev.exit).count());
    t.check(alternate && exits > 0 && entries == exits, &format!("{} and {} alternate, one entry per exit", ev.entry, ev.exit), format!("{entries} entries, {exits} exits; trace:\n{text}"));

    let reasons: Vec<&str> = of(ev.exit).filter_map(|f| after(f, "reason")).filter(|r| !INCIDENTAL.contains(r)).collect();
    t.check(reasons == EXITS, &format!("{}: the guest's exits in order, {}", ev.exit, EXITS.join(", ")), format!("{reasons:?}"));

    let cpuid_rip = of(ev.exit).find(|f| after(f, "reason") == Some("CPUID")).and_then(|f| after(f, "rip"));
    t.expect_eq(cpuid_rip, Some("0x1000"), &format!("{}: the CPUID exit's guest RIP is the CPUID's address", ev.exit));

    let user: Vec<&str> = of(ev.user).filter_map(|f| after(f, "reason")).collect();
    t.check(user == USERSPACE, &format!("{}: each return to userspace, {}", ev.user, USERSPACE.join(", ")), format!("{user:?}"));

    // KVM: "IRQ 0x20"; rvmx: "vector 32 type external interrupt".
    let injected: Vec<&str> = of(ev.inject).collect();
    let irq = injected.iter().any(|f| if rvmx { f.contains("vector 32 type external interrupt") } else { f.starts_with("IRQ 0x20") });
    t.check(irq, &format!("{}: the interrupt injected (vector 0x20, external)", ev.inject), format!("{injected:?}"));

    t.check(counted.is_some_and(|n| n as usize == exits), &format!("perf counted {}:{} on the vCPU thread as often as the trace has it", ev.system, ev.exit), format!("perf {counted:?} ({:?}), trace {exits}", perf.as_ref().err()));

    if rvmx {
        let io_qual = of(ev.exit).find(|f| after(f, "reason") == Some("IO_INSTRUCTION")).and_then(|f| after(f, "qualification"));
        // SDM Vol. 3C Table 28-5: port 0x80 in bits 31:16, bit 6 set (the
        // port is an immediate), OUT (bit 3 clear), 1 byte (bits 2:0 = 0).
        t.expect_eq(io_qual, Some("0x800040"), "rvmx_exit: the OUT's exit qualification (port 0x80 immediate, 1 byte, out)");
        let delta = before.zip(after_stat).map(|(b, a)| a - b);
        t.check(delta.is_some_and(|d| d as usize == exits), "the trace has as many exits as the stats fd counted", format!("stats {delta:?}, trace {exits}"));
    }
    if let Ok(fd) = perf {
        // SAFETY: closes the perf fd we own.
        unsafe { libc::close(fd) };
    }
    t.finish();
}
