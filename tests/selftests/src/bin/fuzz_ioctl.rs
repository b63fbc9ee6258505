//! A seeded ioctl fuzzer for /dev/rvmx (issue 9): random calls on the
//! device, VM and vCPU fds, with random request numbers (KVM's, rvmx's and
//! made up), sizes and arguments (NULL, unmapped, kernel addresses,
//! read-only memory, buffers of random bytes ending at an unmapped page),
//! random memory-slot layouts, KVM_RUN, mmap of the vCPU pages, and fds
//! closed and created again in between; statistics fds that outlive the
//! VM or vCPU they belong to; events (exceptions, interrupt shadows, NMIs)
//! set by KVM_SET_VCPU_EVENTS and RFLAGS.TF set before KVM_RUN, for the
//! exceptions rvmx delivers itself. Then rvmx must still run a guest.
//! The kernel log is checked by tools/vm-run (any oops, WARN, BUG or
//! lockdep report fails the run), and tests/guest/vm.sh checks that rvmx
//! unloads afterwards.
//!
//!     fuzz_ioctl DEVICE CALLS [SEED]
//!
//! Guests never run code the fuzzer did not choose: every memory slot it
//! can make points into buffers filled with HLT (0xF4), or at addresses
//! that are not memory at all, so any KVM_RUN ends at a HLT, a failed
//! entry, a shutdown or an error, never in a loop. (Bochs 2.7 takes no
//! external-interrupt exit from a guest spinning with interrupts off, so
//! looping guests would hang the emulated machine; see README.)

use kvm_bindings::*;
// The pointers the fuzzer passes point into its own mappings (no Rust
// object lives there) or nowhere valid.
use rvmx_selftests::{install_empty_handler, ioctl, Rng, Tap};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::mem::size_of;

const KVMIO: u64 = 0xae;

fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64 & 0x3fff) << 16) | (KVMIO << 8) | nr
}
fn io(nr: u64) -> u64 {
    ioc(0, nr, 0)
}
fn iow(nr: u64, size: usize) -> u64 {
    ioc(1, nr, size)
}
fn ior(nr: u64, size: usize) -> u64 {
    ioc(2, nr, size)
}
fn iowr(nr: u64, size: usize) -> u64 {
    ioc(3, nr, size)
}

/// Memory the fuzzer hands out as arguments and guest RAM.
struct Arena {
    /// Read-write buffer of random bytes, followed by an unmapped page.
    scratch: *mut u8,
    /// Read-only page.
    ro: *mut u8,
    /// Guest RAM candidates: 1 MiB of HLT, read-write, and 64 KiB read-only.
    hlt: *mut u8,
    hlt_ro: *mut u8,
}

const SCRATCH: usize = 8 * 4096;
const HLT: usize = 1 << 20;

fn map(len: usize, prot: i32) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping, kept for the whole run.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
    assert!(p != libc::MAP_FAILED, "mmap");
    p as *mut u8
}

impl Arena {
    fn new() -> Self {
        // The scratch buffer is followed by a page that is unmapped again.
        let scratch = map(SCRATCH + 4096, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: unmaps the last page of the mapping just made.
        unsafe { libc::munmap(scratch.add(SCRATCH) as *mut _, 4096) };
        let ro = map(4096, libc::PROT_READ);
        let hlt = map(HLT, libc::PROT_READ | libc::PROT_WRITE);
        let hlt_ro = map(65536, libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: both mappings are this long and writable.
        unsafe {
            std::ptr::write_bytes(hlt, 0xf4, HLT);
            std::ptr::write_bytes(hlt_ro, 0xf4, 65536);
            libc::mprotect(hlt_ro as *mut _, 65536, libc::PROT_READ);
        }
        Arena { scratch, ro, hlt, hlt_ro }
    }

    /// Random bytes in the scratch buffer (as an argument to read).
    fn randomize(&self, rng: &mut Rng) {
        for i in (0..SCRATCH).step_by(8) {
            let v = match rng.below(4) {
                0 => 0,
                1 => rng.below(256),
                _ => rng.next(),
            };
            // SAFETY: within the scratch buffer.
            unsafe { (self.scratch.add(i) as *mut u64).write_unaligned(v) };
        }
    }

    /// A pointer argument: mostly good memory, often hostile.
    fn pointer(&self, rng: &mut Rng, size: usize) -> u64 {
        match rng.below(10) {
            0 => 0,
            1 => 0x1000,                       // unmapped
            2 => 0xffff_8880_0000_0000 + rng.below(1 << 30), // kernel direct map
            3 => u64::MAX - rng.below(64),     // the very top
            4 => self.ro as u64,               // read-only
            // Ends exactly at the unmapped page (or crosses into it).
            5 => self.scratch as u64 + (SCRATCH - size.min(SCRATCH)) as u64 + rng.below(16),
            _ => self.scratch as u64 + rng.below(64) * 8,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Dev,
    Vm,
    Vcpu,
}

/// The requests each fd answers in KVM, with their argument sizes.
fn requests() -> Vec<(Kind, u64, usize, &'static str)> {
    use Kind::*;
    vec![
        (Dev, io(0x00), 0, "GET_API_VERSION"),
        (Dev, io(0x01), 0, "CREATE_VM"),
        (Dev, iowr(0x02, size_of::<kvm_msr_list>()), 4096, "GET_MSR_INDEX_LIST"),
        (Dev, io(0x03), 0, "CHECK_EXTENSION"),
        (Dev, io(0x04), 0, "GET_VCPU_MMAP_SIZE"),
        (Dev, iowr(0x05, size_of::<kvm_cpuid2>()), 8192, "GET_SUPPORTED_CPUID"),
        (Vm, iow(0x46, size_of::<kvm_userspace_memory_region>()), 32, "SET_USER_MEMORY_REGION"),
        (Vm, io(0x41), 0, "CREATE_VCPU"),
        (Vm, iow(0x42, size_of::<kvm_dirty_log>()), 16, "GET_DIRTY_LOG"),
        (Vm, io(0x47), 0, "SET_TSS_ADDR"),
        (Vm, iow(0x48, 8), 8, "SET_IDENTITY_MAP_ADDR"),
        (Vm, io(0x03), 0, "CHECK_EXTENSION"),
        (Vm, io(0xce), 0, "GET_STATS_FD"),
        (Vcpu, io(0xce), 0, "GET_STATS_FD"),
        (Vcpu, io(0x80), 0, "RUN"),
        (Vcpu, ior(0x81, size_of::<kvm_regs>()), 144, "GET_REGS"),
        (Vcpu, iow(0x82, size_of::<kvm_regs>()), 144, "SET_REGS"),
        (Vcpu, ior(0x83, size_of::<kvm_sregs>()), 312, "GET_SREGS"),
        (Vcpu, iow(0x84, size_of::<kvm_sregs>()), 312, "SET_SREGS"),
        (Vcpu, iow(0x86, size_of::<kvm_interrupt>()), 4, "INTERRUPT"),
        (Vcpu, iowr(0x88, size_of::<kvm_msrs>()), 4096, "GET_MSRS"),
        (Vcpu, iow(0x89, size_of::<kvm_msrs>()), 4096, "SET_MSRS"),
        (Vcpu, iow(0x8b, size_of::<kvm_signal_mask>()), 16, "SET_SIGNAL_MASK"),
        (Vcpu, ior(0x8c, size_of::<kvm_fpu>()), 416, "GET_FPU"),
        (Vcpu, iow(0x8d, size_of::<kvm_fpu>()), 416, "SET_FPU"),
        (Vcpu, iow(0x90, size_of::<kvm_cpuid2>()), 8192, "SET_CPUID2"),
        (Vcpu, iowr(0x91, size_of::<kvm_cpuid2>()), 8192, "GET_CPUID2"),
        (Vcpu, io(0x9a), 0, "NMI"),
        (Vcpu, ior(0x9f, size_of::<kvm_vcpu_events>()), 64, "GET_VCPU_EVENTS"),
        (Vcpu, iow(0xa0, size_of::<kvm_vcpu_events>()), 64, "SET_VCPU_EVENTS"),
        (Vcpu, ior(0xa4, size_of::<kvm_xsave>()), 4096, "GET_XSAVE"),
        (Vcpu, iow(0xa5, size_of::<kvm_xsave>()), 4096, "SET_XSAVE"),
        (Vcpu, ior(0xa6, size_of::<kvm_xcrs>()), 392, "GET_XCRS"),
        (Vcpu, iow(0xa7, size_of::<kvm_xcrs>()), 392, "SET_XCRS"),
    ]
}

struct Vcpu {
    fd: i32,
    run: *mut kvm_run,
}

struct State {
    dev: i32,
    vms: Vec<i32>,
    vcpus: Vec<Vcpu>,
    /// Statistics fds (KVM_GET_STATS_FD), kept past their VM or vCPU.
    stats: Vec<i32>,
}

/// KVM_SET_VCPU_EVENTS's argument with each field drawn from values that
/// matter: the exceptions rvmx intercepts or raises, both interrupt
/// shadows at once, NMIs injected, pending and masked.
fn random_events(rng: &mut Rng) -> kvm_vcpu_events {
    let mut e = kvm_vcpu_events::default();
    e.exception.injected = rng.below(2) as u8;
    e.exception.nr = rng.pick(&[0, 1, 2, 3, 6, 8, 13, 14, 17, 18, 31, 32, 255]);
    e.exception.has_error_code = rng.below(2) as u8;
    e.exception.error_code = rng.pick(&[0, 1, 0xffff_ffff]);
    e.interrupt.injected = rng.below(2) as u8;
    e.interrupt.nr = rng.below(256) as u8;
    e.interrupt.soft = u8::from(rng.below(8) == 0);
    e.interrupt.shadow = rng.below(4) as u8;
    e.nmi.injected = rng.below(2) as u8;
    e.nmi.pending = rng.below(2) as u8;
    e.nmi.masked = rng.below(2) as u8;
    e.flags = rng.below(64) as u32 & (KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW) | rng.pick(&[0, 0, 0, 1 << 6]);
    e
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this program owns.
    unsafe { libc::close(fd) };
}

impl State {
    fn add_vcpu(&mut self, fd: i32, mmap_size: usize) {
        // SAFETY: maps the vCPU's pages (kvm_run first) shared.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), mmap_size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        let run = if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p as *mut kvm_run };
        self.vcpus.push(Vcpu { fd, run });
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| "/dev/rvmx".into());
    let calls: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let mut t = Tap::plan(3);
    println!("# fuzz_ioctl {path} {calls} {seed} (the last number is the seed: pass it to reproduce)");
    let mut rng = Rng(seed | 1);
    let arena = Arena::new();
    let reqs = requests();
    install_empty_handler(libc::SIGALRM);
    let cpath = CString::new(path.clone()).unwrap();
    // SAFETY: opens the device.
    let dev = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(dev >= 0, "open {path}");
    let mmap_size = ioctl(dev, io(0x04), 0).unwrap_or(4096 * 4) as usize;
    let mut st = State { dev, vms: Vec::new(), vcpus: Vec::new(), stats: Vec::new() };
    let mut outcomes: BTreeMap<(Kind, i32), u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    let mut runs = 0u64;
    for call in 0..calls {
        if call % 10_000 == 0 && call > 0 {
            println!("# {call} calls, {:.1} s", started.elapsed().as_secs_f64());
        }
        arena.randomize(&mut rng);
        // Keep some VMs and vCPUs around; sometimes close one.
        if st.vms.is_empty() || rng.below(200) == 0 {
            if let Ok(fd) = ioctl(st.dev, io(0x01), 0) {
                st.vms.push(fd);
            }
        }
        if st.vms.len() > 4 || (rng.below(300) == 0 && !st.vms.is_empty()) {
            let i = rng.below(st.vms.len() as u64) as usize;
            close(st.vms.swap_remove(i));
        }
        if st.vcpus.len() > 12 || (rng.below(150) == 0 && !st.vcpus.is_empty()) {
            let i = rng.below(st.vcpus.len() as u64) as usize;
            let v = st.vcpus.swap_remove(i);
            if !v.run.is_null() && rng.below(2) == 0 {
                // SAFETY: unmaps what add_vcpu mapped (or leaves it mapped
                // past the close, which must work too).
                unsafe { libc::munmap(v.run as *mut _, mmap_size) };
            }
            close(v.fd);
        }
        if st.stats.len() > 8 || (rng.below(100) == 0 && !st.stats.is_empty()) {
            let i = rng.below(st.stats.len() as u64) as usize;
            close(st.stats.swap_remove(i));
        } else if rng.below(20) == 0 && !st.stats.is_empty() {
            // A statistics read at any offset, after its VM or vCPU may
            // have gone.
            let fd = st.stats[rng.below(st.stats.len() as u64) as usize];
            let any = rng.below(1 << 16) as i64;
            let off = rng.pick(&[0, 24, 4096, any, i64::MAX]);
            // SAFETY: reads at most SCRATCH bytes into the scratch buffer.
            unsafe { libc::pread(fd, arena.scratch as *mut _, rng.below(SCRATCH as u64) as usize, off) };
        }
        let kind = match rng.below(10) {
            0 => Kind::Dev,
            1..=4 => Kind::Vm,
            _ => Kind::Vcpu,
        };
        let fd = match kind {
            Kind::Dev => st.dev,
            Kind::Vm if !st.vms.is_empty() => st.vms[rng.below(st.vms.len() as u64) as usize],
            Kind::Vcpu if !st.vcpus.is_empty() => st.vcpus[rng.below(st.vcpus.len() as u64) as usize].fd,
            _ => continue,
        };
        // The request: KVM's for this kind of fd, another fd's, one with a
        // wrong size or direction, or made up.
        let (req, size) = match rng.below(10) {
            0..=5 => {
                let mine: Vec<_> = reqs.iter().filter(|r| r.0 == kind).collect();
                let r = mine[rng.below(mine.len() as u64) as usize];
                (r.1, r.2)
            }
            6 => {
                let r = reqs[rng.below(reqs.len() as u64) as usize];
                (r.1, r.2)
            }
            7 => {
                let r = reqs[rng.below(reqs.len() as u64) as usize];
                (r.1 ^ (rng.below(4) << 30) ^ (rng.below(64) << 16), r.2)
            }
            8 => (ioc(rng.below(4), rng.below(256), rng.below(4096) as usize), rng.below(4096) as usize),
            _ => (rng.next() & 0xffff_ffff, 64),
        };
        let nr = req & 0xff;
        let ty = (req >> 8) & 0xff;
        // Arguments by request.
        let arg = if ty == KVMIO && kind == Kind::Vm && nr == 0x46 && rng.below(2) == 0 {
            // A memory slot: into the HLT buffers, or somewhere hostile.
            let region = kvm_userspace_memory_region {
                slot: rng.pick(&[0, 1, 2, 3, 31, 32, 32767, 0x1_0000, u32::MAX]),
                flags: rng.pick(&[0, KVM_MEM_READONLY, KVM_MEM_LOG_DIRTY_PAGES, 3, 4]),
                guest_phys_addr: rng.pick(&[0, 0x1000, 0xf_0000, 0x1_0000_0000, 1 << 46, u64::MAX - 0xfff]) + rng.below(4) * 0x1000,
                memory_size: rng.pick(&[0, 0x1000, 0x1_0000, HLT as u64, 1 << 30, 1 << 46, 0x1234]),
                userspace_addr: match rng.below(6) {
                    0 => 0,
                    1 => 0xffff_8880_0000_0000,
                    2 => arena.hlt_ro as u64,
                    3 => arena.hlt as u64 + 0x123,
                    _ => arena.hlt as u64 + rng.below(16) * 0x1000,
                },
            };
            // The region descriptor itself is good memory here.
            // SAFETY: the scratch buffer holds at least 32 bytes.
            unsafe { (arena.scratch as *mut kvm_userspace_memory_region).write_unaligned(region) };
            arena.scratch as u64
        } else if ty == KVMIO && kind == Kind::Vm && nr == 0x41 {
            rng.pick(&[0, 1, 2, 7, 63, 64, 1000, u32::MAX as u64, u64::MAX])
        } else if ty == KVMIO && kind == Kind::Vcpu && nr == 0xa0 && rng.below(2) == 0 {
            // SAFETY: the scratch buffer holds at least 64 bytes.
            unsafe { (arena.scratch as *mut kvm_vcpu_events).write_unaligned(random_events(&mut rng)) };
            arena.scratch as u64
        } else if ty == KVMIO && kind == Kind::Vcpu && nr == 0x80 {
            // Sometimes with RFLAGS.TF (and AC) set: every HLT rvmx then
            // skips raises a single-step #DB, through whatever IDT the
            // guest has.
            if rng.below(8) == 0 {
                let mut regs = kvm_regs::default();
                if ioctl(fd, ior(0x81, size_of::<kvm_regs>()), &mut regs as *mut _ as u64).is_ok() {
                    regs.rflags |= 0x100 | rng.pick(&[0, 1 << 18]);
                    let _ = ioctl(fd, iow(0x82, size_of::<kvm_regs>()), &regs as *const _ as u64);
                }
            }
            // KVM_RUN: with immediate_exit sometimes, and a timer signal so
            // that nothing blocks for long.
            if let Some(v) = st.vcpus.iter().find(|v| v.fd == fd) {
                if !v.run.is_null() {
                    // SAFETY: the run page is mapped and shared with the kernel.
                    unsafe { std::ptr::addr_of_mut!((*v.run).immediate_exit).write_volatile(rng.below(2) as u8) };
                }
            }
            runs += 1;
            0
        } else if size == 0 || rng.below(8) == 0 {
            let (any, small) = (rng.next(), rng.below(1 << 16));
            rng.pick(&[0, 1, any, small])
        } else {
            arena.pointer(&mut rng, size)
        };
        let timer = libc::itimerval {
            it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
            it_value: libc::timeval { tv_sec: 0, tv_usec: 20_000 },
        };
        // SAFETY: arms a one-shot SIGALRM (handled, not fatal).
        unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
        let r = ioctl(fd, req, arg);
        let off = libc::itimerval { it_interval: timer.it_interval, it_value: libc::timeval { tv_sec: 0, tv_usec: 0 } };
        // SAFETY: disarms it.
        unsafe { libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut()) };
        *outcomes.entry((kind, r.err().unwrap_or(0))).or_default() += 1;
        // New fds from CREATE_VM / CREATE_VCPU join the pool.
        if let Ok(newfd) = r {
            if ty == KVMIO && nr == 0x01 && kind == Kind::Dev && (req >> 30) == 0 {
                st.vms.push(newfd);
            } else if ty == KVMIO && nr == 0x41 && kind == Kind::Vm && (req >> 30) == 0 {
                st.add_vcpu(newfd, mmap_size);
            } else if ty == KVMIO && nr == 0xce && (req >> 30) == 0 && kind != Kind::Dev {
                st.stats.push(newfd);
            }
        }
        // Sometimes poke the shared run page as a hostile VMM would.
        if rng.below(50) == 0 && !st.vcpus.is_empty() {
            let v = &st.vcpus[rng.below(st.vcpus.len() as u64) as usize];
            if !v.run.is_null() {
                let off = rng.below(4096 / 8) as usize * 8;
                // SAFETY: within the mapped run page.
                unsafe { (v.run as *mut u8).add(off).cast::<u64>().write_volatile(rng.next()) };
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for ((kind, errno), n) in &outcomes {
        println!("# {kind:?} fd: {} {n}", if *errno == 0 { "success".to_string() } else { format!("errno {errno}") });
    }
    println!("# {calls} calls ({runs} KVM_RUN) in {secs:.1} s");
    for v in st.vcpus.drain(..) {
        close(v.fd);
    }
    for fd in st.vms.drain(..).chain(st.stats.drain(..)) {
        close(fd);
    }
    t.check(true, &format!("{calls} random ioctls on {path} returned (seed {seed})"), "");
    t.check(outcomes.iter().any(|((_, e), _)| *e == 0), "some calls succeeded (the fuzzer reached past the argument checks)", "");

    // rvmx still works: a fresh VM runs a HLT.
    let vm = ioctl(dev, io(0x01), 0);
    let ok = vm.is_ok_and(|vm| {
        // The last MiB below 4 GiB: the reset state's CS base 0xffff0000
        // and RIP 0xfff0 put the first instruction at 0xfffffff0.
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: (1 << 32) - HLT as u64,
            memory_size: HLT as u64,
            userspace_addr: arena.hlt as u64,
        };
        let set = ioctl(vm, iow(0x46, size_of::<kvm_userspace_memory_region>()), &region as *const _ as u64);
        let vcpu = ioctl(vm, io(0x41), 0);
        let ran = match (set, vcpu) {
            (Ok(_), Ok(v)) => {
                let mut s = State { dev, vms: vec![], vcpus: vec![], stats: vec![] };
                s.add_vcpu(v, mmap_size);
                let run = s.vcpus[0].run;
                if run.is_null() {
                    false
                } else {
                    // SAFETY: the run page is mapped.
                    unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(0) };
                    // The first instruction is a HLT.
                    let r = ioctl(v, io(0x80), 0);
                    // SAFETY: reads the exit reason from the run page.
                    let reason = unsafe { (*run).exit_reason };
                    println!("# the new VM's KVM_RUN: {r:?}, exit reason {reason}");
                    r.is_ok() && reason == KVM_EXIT_HLT
                }
            }
            _ => false,
        };
        close(vm);
        ran
    });
    t.check(ok, "after the fuzzing a new VM runs a guest to its HLT", "no KVM_EXIT_HLT from the reset vector");
    close(dev);
    t.finish();
}
