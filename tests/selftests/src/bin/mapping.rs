//! The guest's memory follows the VMM's mapping (issue 9), on /dev/rvmx or
//! (first argument) /dev/kvm: after MADV_DONTNEED, a new mapping over the
//! old one (MAP_FIXED), mremap and munmap of a slot's memory, the guest
//! sees what the VMM's address space now holds, never the old page, as
//! under KVM (rvmx's MMU notifier, vm.rs). Guest memory is not pinned, on
//! either: VmPin stays 0; a VMM without CAP_IPC_LOCK and with
//! RLIMIT_MEMLOCK at 64 KiB runs a guest that touches 32 MiB; and the
//! kernel may swap guest memory out under a running guest (MADV_PAGEOUT,
//! to a swap device this test sets up on a loop device), after which the
//! guest reads its data intact. Prints TAP.

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::Tap;
use std::ffi::CString;

const SLOT: usize = 64 << 10;
const TOUCH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/touch.bin"));
const PAGEOUT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pageout.bin"));
/// Where the big guests' touched memory starts (1 MiB, above the code).
const BIG_BASE: u64 = 1 << 20;
const CODE: u64 = 0x1000;
const DATA: u64 = 0x8000;
/// linux/capability.h.
const CAP_IPC_LOCK: u32 = 14;

/// A VM with one 64 KiB slot at GPA 0 over an anonymous mapping, and a
/// real-mode vCPU that reads the byte at DATA, sends it to port 0x10 and
/// does it again, for ever.
struct Vm {
    vm: kvm_ioctls::VmFd,
    vcpu: VcpuFd,
    mem: *mut u8,
}

fn map_anon(at: *mut u8, size: usize, fixed: bool) -> *mut u8 {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if fixed { libc::MAP_FIXED } else { 0 };
    // SAFETY: an anonymous mapping; with MAP_FIXED it replaces one of ours.
    let p = unsafe { libc::mmap(at as *mut _, size, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    assert!(p != libc::MAP_FAILED);
    p as *mut u8
}

impl Vm {
    fn new(kvm: &Kvm) -> Vm {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        let mem = map_anon(std::ptr::null_mut(), SLOT, false);
        let r = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: SLOT as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: the mapping lives as long as the process (the test
        // replaces and unmaps parts of it on purpose).
        unsafe { vm.set_user_memory_region(r) }.expect("KVM_SET_USER_MEMORY_REGION");
        let v = Vm { vcpu: vm.create_vcpu(0).expect("KVM_CREATE_VCPU"), vm, mem };
        // mov al, [DATA]; out 0x10, al; jmp $-7
        v.write(CODE, &[0xa0, DATA as u8, (DATA >> 8) as u8, 0xe6, 0x10, 0xeb, 0xf9]);
        let mut s = v.vcpu.get_sregs().expect("KVM_GET_SREGS");
        s.cs.selector = 0;
        s.cs.base = 0;
        v.vcpu.set_sregs(&s).expect("KVM_SET_SREGS");
        let regs = kvm_bindings::kvm_regs { rip: CODE, rflags: 2, rsp: 0x7000, ..Default::default() };
        v.vcpu.set_regs(&regs).expect("KVM_SET_REGS");
        v
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        // SAFETY: within the slot's mapping (the caller keeps it mapped).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(gpa as usize), bytes.len()) };
    }

    /// The next byte the guest reads at DATA, or how the run ended.
    fn read(&mut self) -> Result<u8, String> {
        match self.vcpu.run() {
            Ok(VcpuExit::IoOut(0x10, d)) => Ok(d[0]),
            Ok(other) => Err(format!("{other:?}")),
            Err(e) => Err(format!("errno {}", e.errno())),
        }
    }
}

/// VmPin of this process, in kB.
fn vm_pin_kb() -> u64 {
    status_kb("VmPin:")
}

/// A "Field: N kB" line of /proc/self/status, in kB (0 if absent).
fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A VM with one slot of `size` bytes at GPA 0 over a fresh anonymous
/// mapping, and a vCPU in flat 32-bit protected mode at CODE running
/// `code` with ESI = BIG_BASE, EDX = 4096, EBP = `pages`.
fn big_vm(kvm: &Kvm, size: usize, code: &[u8], pages: u64) -> (kvm_ioctls::VmFd, VcpuFd, *mut u8) {
    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let mem = map_anon(std::ptr::null_mut(), size, false);
    let r = kvm_bindings::kvm_userspace_memory_region {
        slot: 0, flags: 0, guest_phys_addr: 0, memory_size: size as u64, userspace_addr: mem as u64,
    };
    // SAFETY: the mapping outlives the VM (never unmapped).
    unsafe { vm.set_user_memory_region(r) }.expect("KVM_SET_USER_MEMORY_REGION");
    // SAFETY: within the mapping.
    unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), mem.add(CODE as usize), code.len()) };
    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    rvmx_selftests::protected_mode(&vcpu);
    let regs = kvm_bindings::kvm_regs { rip: CODE, rflags: 2, rsi: BIG_BASE, rdx: 4096, rbp: pages, ..Default::default() };
    vcpu.set_regs(&regs).expect("KVM_SET_REGS");
    (vm, vcpu, mem)
}

/// In a child process without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at
/// 64 KiB: a guest touches 32 MiB (8,192 pages, 512 times the limit) and
/// must get to its OUT, as under KVM: guest memory is not locked memory.
/// Returns the child's verdict.
fn unprivileged_big_guest(path: &str) -> Result<(), String> {
    const PAGES: u64 = 8192;
    // SAFETY: fork; the child makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header { version: 0x2008_0522, pid: 0 };
        let mut d = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data words.
        let code = unsafe {
            libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr());
            d[0].effective &= !(1 << CAP_IPC_LOCK);
            d[0].permitted &= !(1 << CAP_IPC_LOCK);
            let lim = libc::rlimit { rlim_cur: 64 << 10, rlim_max: 64 << 10 };
            if libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) != 0 || libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                2
            } else {
                let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open");
                let (_vm, mut vcpu, _mem) = big_vm(&kvm, BIG_BASE as usize + (PAGES as usize) * 4096, TOUCH, PAGES);
                match vcpu.run() {
                    Ok(VcpuExit::IoOut(0x10, _)) if vm_pin_kb() == 0 => 0,
                    Ok(VcpuExit::IoOut(0x10, _)) => 3,
                    Err(e) if e.errno() == libc::ENOMEM => 1,
                    _ => 4,
                }
            }
        };
        // SAFETY: ends the child.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, 0) => Ok(()),
        (true, 1) => Err("KVM_RUN failed with ENOMEM: guest memory counted against RLIMIT_MEMLOCK".into()),
        (true, 2) => Err("could not drop CAP_IPC_LOCK or set the limit".into()),
        (true, 3) => Err("the guest ran, but VmPin is not 0".into()),
        (true, 4) => Err("the guest did not get to its OUT".into()),
        _ => Err(format!("child status {status:#x}")),
    }
}

/// Swap for the pageout test: a 16 MiB file in the initramfs on a loop
/// device. Ok(true) if this set it up (and should take it down), Ok(false)
/// if swap was on already.
fn swap_on() -> Result<bool, String> {
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(|e| format!("/proc/swaps: {e}"))?;
    if swaps.lines().count() > 1 {
        return Ok(false);
    }
    let run = |cmd: &[&str]| -> Result<String, String> {
        let out = std::process::Command::new(cmd[0]).args(&cmd[1..]).output().map_err(|e| format!("{}: {e}", cmd[0]))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("{:?}: {}", cmd, String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    std::fs::write("/tmp/rvmx-swap", vec![0u8; 16 << 20]).map_err(|e| format!("swap file: {e}"))?;
    run(&["losetup", "/dev/loop7", "/tmp/rvmx-swap"])?;
    run(&["mkswap", "/dev/loop7"])?;
    run(&["swapon", "/dev/loop7"])?;
    Ok(true)
}

fn swap_off() {
    for cmd in [&["swapoff", "/dev/loop7"][..], &["losetup", "-d", "/dev/loop7"]] {
        let _ = std::process::Command::new(cmd[0]).args(&cmd[1..]).status();
    }
    let _ = std::fs::remove_file("/tmp/rvmx-swap");
}

/// VmSwap of this process, in kB: the VMM's pages whose page-table entry
/// is a swap entry (sent to swap, whether or not the write is done yet).
fn vm_swap_kb() -> u64 {
    status_kb("VmSwap:")
}

/// The guest stores into 1 MiB of its memory, the VMM pages that memory
/// out (MADV_PAGEOUT) while the guest waits in its OUT, and the guest
/// reads it back. Returns (kB the pageout sent to swap, the guest's
/// verdict).
fn pageout(kvm: &Kvm) -> (u64, Result<(), String>) {
    const PAGES: u64 = 256;
    let (_vm, mut vcpu, mem) = big_vm(kvm, BIG_BASE as usize + (PAGES as usize) * 4096, PAGEOUT, PAGES);
    match vcpu.run() {
        Ok(VcpuExit::IoOut(0x10, _)) => {}
        other => return (0, Err(format!("first run: {other:?}"))),
    }
    // SAFETY: the guest's pages within our mapping.
    let data = unsafe { mem.add(BIG_BASE as usize) };
    let swapped_before = vm_swap_kb();
    // SAFETY: advice on our own mapping.
    let r = unsafe { libc::madvise(data as *mut _, PAGES as usize * 4096, libc::MADV_PAGEOUT) };
    if r != 0 {
        return (0, Err(format!("MADV_PAGEOUT: {}", std::io::Error::last_os_error())));
    }
    let swapped = vm_swap_kb().saturating_sub(swapped_before);
    let verdict = match vcpu.run() {
        Ok(VcpuExit::IoOut(0x11, _)) => Ok(()),
        Ok(VcpuExit::IoOut(0x12, _)) => Err(format!("the guest found a page changed (EDI {:#x})", vcpu.get_regs().map(|r| r.rdi).unwrap_or(0))),
        other => Err(format!("second run: {other:?}")),
    };
    (swapped, verdict)
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let kvm = Kvm::new_with_path(CString::new(path.clone()).unwrap()).expect("open device");
    let mut t = Tap::plan(10);
    let mut v = Vm::new(&kvm);
    let page = (DATA as usize) & !4095;

    v.write(DATA, &[0x11]);
    t.expect_eq(v.read(), Ok(0x11), "the guest reads the VMM's byte");

    // SAFETY: drops our own anonymous page: it reads as zero from now on.
    let rc = unsafe { libc::madvise(v.mem.add(page) as *mut _, 4096, libc::MADV_DONTNEED) };
    // SAFETY: within the slot's mapping.
    let vmm_sees = unsafe { std::ptr::read_volatile(v.mem.add(DATA as usize)) };
    let guest_sees = v.read();
    println!("# after MADV_DONTNEED (rc {rc}) the VMM reads {vmm_sees:#x}, the guest {guest_sees:?}");
    t.expect_eq((rc, vmm_sees, guest_sees), (0, 0, Ok(0)), "after MADV_DONTNEED the guest reads the new zero page, not the old page");
    v.write(DATA, &[0x44]);
    t.expect_eq(v.read(), Ok(0x44), "then a store by the VMM reaches the guest");

    // SAFETY: an address within the slot's mapping (no access made).
    let p = map_anon(unsafe { v.mem.add(page) }, 4096, true);
    // SAFETY: the page just mapped.
    unsafe { *p = 0x22 };
    t.expect_eq(v.read(), Ok(0x22), "after a new mapping over it (MAP_FIXED) the guest reads the new page");

    // mremap a fresh page over it (MREMAP_FIXED): the slot's address now
    // holds that page's content.
    let q = map_anon(std::ptr::null_mut(), 4096, false);
    // SAFETY: our own mapping.
    unsafe { *q = 0x33 };
    // SAFETY: moves our page `q` onto the slot's page.
    let r = unsafe { libc::mremap(q as *mut _, 4096, 4096, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, v.mem.add(page)) };
    assert!(r != libc::MAP_FAILED);
    t.expect_eq(v.read(), Ok(0x33), "after mremap onto it the guest reads the moved page");

    let pin = vm_pin_kb();
    t.check(pin == 0, "the guest's pages are not pinned (VmPin 0 kB)", format!("VmPin {pin} kB"));

    // SAFETY: unmaps the page: the guest's next read has no memory behind it.
    unsafe { libc::munmap(v.mem.add(page) as *mut _, 4096) };
    let after = v.read();
    t.check(after == Err("errno 14".to_string()), "after munmap the guest's read fails KVM_RUN with EFAULT", format!("{after:?}"));
    drop(v.vm);

    let r = unprivileged_big_guest(&path);
    t.check(r.is_ok(), "without CAP_IPC_LOCK and with RLIMIT_MEMLOCK at 64 KiB, a guest touches 32 MiB", format!("{r:?}"));

    match swap_on() {
        Ok(ours) => {
            let (swapped, verdict) = pageout(&kvm);
            t.check(swapped >= 1024, "MADV_PAGEOUT of 1 MiB the guest wrote under a running guest: all of it goes to swap (VmSwap)", format!("VmSwap grew by {swapped} kB"));
            t.check(verdict.is_ok(), "the guest reads what it wrote after its memory was swapped out and back", format!("{verdict:?}"));
            if ours {
                swap_off();
            }
        }
        Err(e) => {
            t.skip("MADV_PAGEOUT of 1 MiB the guest wrote under a running guest: all of it goes to swap (VmSwap)", &format!("no swap: {e}"));
            t.skip("the guest reads what it wrote after its memory was swapped out and back", "no swap");
        }
    }
    t.finish();
}
