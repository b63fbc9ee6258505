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

// SAFETY: the mapping's address is shared between test threads, which
// synchronize through the guest (atomic instructions) or join first.
unsafe impl Sync for TestVm {}

#[path = "../../rng.rs"]
mod rng;
pub use rng::Rng;
