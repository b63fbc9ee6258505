//! A tiny TAP producer for rvmx's kselftest-style test programs: each
//! program declares its plan, reports `ok N - name` / `not ok N - name`
//! (with `# SKIP reason` where a check cannot run), and exits non-zero if
//! anything failed.

use std::fmt::Display;

/// One test program's TAP stream.
pub struct Tap {
    planned: usize,
    n: usize,
    failed: usize,
}

impl Tap {
    /// Starts a stream of `planned` tests.
    pub fn plan(planned: usize) -> Self {
        println!("TAP version 13");
        println!("1..{planned}");
        Tap { planned, n: 0, failed: 0 }
    }

    /// Reports one check; `detail` is printed as a diagnostic on failure.
    pub fn check(&mut self, ok: bool, name: &str, detail: impl Display) {
        self.n += 1;
        if ok {
            println!("ok {} - {name}", self.n);
        } else {
            self.failed += 1;
            println!("not ok {} - {name}", self.n);
            println!("# {detail}");
        }
    }

    /// Reports a check that does not apply here (on the other device, say):
    /// `ok N - name # SKIP reason`, which tools/check counts as skipped,
    /// not passed.
    pub fn skip(&mut self, name: &str, reason: &str) {
        self.n += 1;
        println!("ok {} - {name} # SKIP {reason}", self.n);
    }

    /// Compares an ioctl-style result with what is expected.
    pub fn expect_eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, name: &str) {
        let ok = got == want;
        self.check(ok, name, format!("got {got:?}, want {want:?}"));
    }

    /// Ends the stream; the process exit status says whether all passed.
    pub fn finish(self) -> ! {
        if self.n != self.planned {
            println!("# planned {} tests but ran {}", self.planned, self.n);
            std::process::exit(1);
        }
        std::process::exit(if self.failed == 0 { 0 } else { 1 });
    }
}

extern "C" fn on_signal(_: libc::c_int) {}

/// Installs an empty handler for `sig`, without SA_RESTART: the signal then
/// ends a blocked KVM_RUN with EINTR instead of killing the process.
pub fn install_empty_handler(sig: libc::c_int) {
    // SAFETY: installs an async-signal-safe empty handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Result of a raw ioctl: the return value, or the errno. `arg` is an
/// integer, or a pointer the kernel may read or write as much as `req`
/// says: to a live buffer of the caller's at least that big, or into memory
/// no Rust object lives in (the fuzzer's own mappings, or nowhere valid).
pub fn ioctl(fd: i32, req: u64, arg: u64) -> Result<i32, i32> {
    // SAFETY: as the callers promise above: the kernel validates every
    // pointer, and no Rust object is written beyond its size.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

/// A VM for a test: `size` bytes of RAM at guest-physical 0 (one slot, an
/// anonymous mapping that lives as long as the process).
pub struct TestVm {
    pub vm: kvm_ioctls::VmFd,
    mem: usize,
    size: usize,
}

impl TestVm {
    pub fn new(kvm: &kvm_ioctls::Kvm, size: usize) -> TestVm {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        // SAFETY: a fresh anonymous mapping, never unmapped (the process is
        // short-lived and the VM may use it until it ends).
        let mem = unsafe {
            libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE,
                       libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(mem != libc::MAP_FAILED);
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: size as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: the mapping outlives the VM.
        unsafe { vm.set_user_memory_region(region).expect("KVM_SET_USER_MEMORY_REGION") };
        TestVm { vm, mem: mem as usize, size }
    }

    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        assert!(gpa as usize + bytes.len() <= self.size);
        // SAFETY: within the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (self.mem + gpa as usize) as *mut u8, bytes.len()) };
    }

    /// Reads a 32-bit value the guest may be writing concurrently.
    pub fn read_u32(&self, gpa: u64) -> u32 {
        assert!(gpa as usize + 4 <= self.size);
        // SAFETY: within the mapping; a volatile read of guest memory.
        unsafe { ((self.mem + gpa as usize) as *const u32).read_volatile() }
    }

    /// A vCPU with id `id` in real mode at 0000:`ip`, with the CPUID table
    /// every KVM client sets (the supported one, VMX off, the hypervisor
    /// bit on, APIC ID = `id`) where the device has KVM_SET_CPUID2.
    pub fn real_mode_vcpu(&self, kvm: &kvm_ioctls::Kvm, id: u64, ip: u64) -> kvm_ioctls::VcpuFd {
        let vcpu = self.vm.create_vcpu(id).expect("KVM_CREATE_VCPU");
        if kvm.check_extension(kvm_ioctls::Cap::ExtCpuid) {
            let mut cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID");
            for e in cpuid.as_mut_slice() {
                if e.function == 1 {
                    e.ecx = (e.ecx & !(1 << 5)) | (1 << 31);
                    e.ebx = (e.ebx & 0x00ff_ffff) | ((id as u32) << 24);
                }
            }
            vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
        }
        let mut s = vcpu.get_sregs().expect("KVM_GET_SREGS");
        s.cs.selector = 0;
        s.cs.base = 0;
        vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
        let regs = kvm_bindings::kvm_regs { rip: ip, rflags: 2, rsp: 0x8000, ..Default::default() };
        vcpu.set_regs(&regs).expect("KVM_SET_REGS");
        vcpu
    }
}

/// A flat segment for KVM_SET_SREGS: code (type 11) or data (type 3), 64-bit
/// code with `l`, 32-bit with `db`.
pub fn flat_segment(selector: u16, type_: u8, l: u8, db: u8) -> kvm_bindings::kvm_segment {
    kvm_bindings::kvm_segment {
        base: 0, limit: 0xffff_ffff, selector, type_, present: 1, dpl: 0, db, s: 1, l, g: 1,
        avl: 0, unusable: 0, padding: 0,
    }
}

/// Puts `vcpu` in 32-bit protected mode: flat code at selector 8, flat data
/// at 16, paging off.
pub fn protected_mode(vcpu: &kvm_ioctls::VcpuFd) {
    let mut s = vcpu.get_sregs().expect("KVM_GET_SREGS");
    s.cs = flat_segment(8, 11, 0, 1);
    s.ds = flat_segment(16, 3, 0, 1);
    (s.es, s.ss) = (s.ds, s.ds);
    s.cr0 |= 1;
    vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
}

impl TestVm {

    /// Puts `vcpu` in 64-bit mode with the first GiB identity-mapped by
    /// 2 MiB pages (PML4 at 0x10000, PDPT at 0x11000, PD at 0x12000): code
    /// at selector 8, data at 16. The VM needs 0x13000 bytes at least.
    pub fn long_mode(&self, vcpu: &kvm_ioctls::VcpuFd) {
        self.write(0x10000, &(0x11000u64 | 3).to_le_bytes());
        self.write(0x11000, &(0x12000u64 | 3).to_le_bytes());
        for i in 0..512u64 {
            self.write(0x12000 + i * 8, &((i << 21) | 0x83).to_le_bytes());
        }
        let mut s = vcpu.get_sregs().expect("KVM_GET_SREGS");
        s.cs = flat_segment(8, 11, 1, 0);
        s.ds = flat_segment(16, 3, 0, 1);
        (s.es, s.ss) = (s.ds, s.ds);
        s.cr3 = 0x10000;
        s.cr4 = 1 << 5; // PAE
        s.efer = (1 << 8) | (1 << 10); // LME, LMA
        s.cr0 = 0x8000_0031; // PG, NE, ET, PE
        vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
    }
}

/// A hardware watchpoint on writes to `target` (perf, PERF_TYPE_BREAKPOINT)
/// for this thread: the kernel programs DR0-DR7 for it; the count (read
/// with `read_count`) says how often it fired.
pub fn watchpoint(target: *const u64) -> Result<i32, i32> {
    #[repr(C)]
    #[derive(Default)]
    struct PerfEventAttr {
        type_: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        bp_addr: u64,
        bp_len: u64,
        rest: [u64; 10],
    }
    let attr = PerfEventAttr {
        type_: 5, // PERF_TYPE_BREAKPOINT
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        flags: 1 << 5 | 1 << 6, // exclude_kernel, exclude_hv
        bp_type: 2,             // HW_BREAKPOINT_W
        bp_addr: target as u64,
        bp_len: 8,
        ..Default::default()
    };
    // SAFETY: perf_event_open with a fully initialized attribute: this
    // thread, any CPU.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const _, 0, -1, -1, 0) };
    if fd < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(fd as i32)
    }
}

/// A perf counter's value.
pub fn read_count(fd: i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into `v`.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut _, 8) };
    v
}

// SAFETY: the mapping's address is shared between test threads, which
// synchronize through the guest (atomic instructions) or join first.
unsafe impl Sync for TestVm {}

#[path = "../../rng.rs"]
mod rng;
pub use rng::Rng;
