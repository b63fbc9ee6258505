//! Lifecycle races on /dev/rvmx (or the device given as the first
//! argument; issue 9): what a VMM may do to its VMs while vCPUs run, and
//! many VMs made and destroyed. Every step must end (no hang), every call
//! must return, and afterwards tests/guest/vm.sh checks that rvmx unloads
//! and kmemleak finds nothing of rvmx's. Prints TAP.
//!
//! The running guests spin with interrupts enabled (STI; JMP $): Bochs 2.7
//! takes external-interrupt exits only then (README), and those exits are
//! where a signal ends KVM_RUN.

use rvmx_selftests::{install_empty_handler, ioctl, Tap};
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KVMIO: u64 = 0xae;
const CREATE_VM: u64 = KVMIO << 8 | 0x01;
const GET_VCPU_MMAP_SIZE: u64 = KVMIO << 8 | 0x04;
const CREATE_VCPU: u64 = KVMIO << 8 | 0x41;
const RUN: u64 = KVMIO << 8 | 0x80;
const GET_REGS: u64 = (2 << 30) | (144 << 16) | (KVMIO << 8) | 0x81;
const SET_USER_MEMORY_REGION: u64 = (1 << 30) | (32 << 16) | (KVMIO << 8) | 0x46;
const MEM: usize = 0x10000;

fn close(fd: i32) {
    // SAFETY: closes a descriptor the test owns.
    unsafe { libc::close(fd) };
}

/// A VM made with raw ioctls (so that the test can close its fds and unmap
/// its run pages whenever it likes): the VM fd, the vCPU fds and their
/// mapped run pages, and the guest RAM.
struct RawVm {
    vm: i32,
    vcpus: Vec<i32>,
    runs: Vec<*mut u8>,
    mem: *mut u8,
    mmap_size: usize,
}

// SAFETY: the raw pointers are mappings shared with the kernel, used by
// one thread at a time or only for munmap.
unsafe impl Send for RawVm {}

/// Makes a VM whose vCPUs spin in real mode at the reset vector: RAM at
/// the top 64 KiB below 4 GiB, with STI; JMP $ at 0xfffffff0 (the reset
/// state's first instruction).
fn spin_vm(dev: i32, vcpus: usize) -> Result<RawVm, i32> {
    let mmap_size = ioctl(dev, GET_VCPU_MMAP_SIZE, 0)? as usize;
    let vm = ioctl(dev, CREATE_VM, 0)?;
    // SAFETY: a fresh anonymous mapping; unmapped by `destroy`.
    let mem = unsafe {
        libc::mmap(std::ptr::null_mut(), MEM, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    assert!(mem as isize != -1);
    // SAFETY: within the mapping: STI; JMP $ at offset 0xfff0.
    unsafe { std::ptr::copy_nonoverlapping([0xfb, 0xeb, 0xfe].as_ptr(), mem.add(0xfff0), 3) };
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: (1 << 32) - MEM as u64,
        memory_size: MEM as u64,
        userspace_addr: mem as u64,
    };
    ioctl(vm, SET_USER_MEMORY_REGION, &region as *const _ as u64)?;
    let mut v = RawVm { vm, vcpus: Vec::new(), runs: Vec::new(), mem, mmap_size };
    for id in 0..vcpus {
        let fd = ioctl(vm, CREATE_VCPU, id as u64)?;
        // SAFETY: maps the vCPU's pages.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), mmap_size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
        v.vcpus.push(fd);
        v.runs.push(if p == libc::MAP_FAILED { std::ptr::null_mut() } else { p as *mut u8 });
    }
    Ok(v)
}

impl RawVm {
    fn destroy(self) {
        for (fd, run) in self.vcpus.iter().zip(&self.runs) {
            if !run.is_null() {
                // SAFETY: unmaps what spin_vm mapped.
                unsafe { libc::munmap(*run as *mut _, self.mmap_size) };
            }
            close(*fd);
        }
        close(self.vm);
        // SAFETY: unmaps the guest RAM (the VM is gone).
        unsafe { libc::munmap(self.mem as *mut _, MEM) };
    }
}

/// KVM_RUN on `fd` until a SIGALRM ends it. The timer repeats every
/// `usec` until the call returns: a one-shot signal that fired before the
/// thread entered KVM_RUN (the emulated machine may well take that long to
/// get there) would leave the guest spinning for ever, which is the test
/// hanging, not rvmx.
fn run_until_timer(fd: i32, usec: i64) -> Result<i32, i32> {
    install_empty_handler(libc::SIGALRM);
    let tick = libc::timeval { tv_sec: 0, tv_usec: usec };
    let on = libc::itimerval { it_interval: tick, it_value: tick };
    let off = libc::itimerval { it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 }, it_value: libc::timeval { tv_sec: 0, tv_usec: 0 } };
    // SAFETY: a periodic SIGALRM with an empty handler, disarmed below.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &on, std::ptr::null_mut()) };
    let r = ioctl(fd, RUN, 0);
    // SAFETY: disarms the timer.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &off, std::ptr::null_mut()) };
    r
}

/// Runs vCPU `fd` in a thread until `stop` is set: KVM_RUN again after
/// every EINTR; returns how many runs ended and the last error.
fn spawn_runner(fd: i32, stop: Arc<AtomicBool>, entries: Arc<AtomicU64>) -> std::thread::JoinHandle<i32> {
    std::thread::spawn(move || {
        let mut last = 0;
        while !stop.load(Ordering::Relaxed) {
            entries.fetch_add(1, Ordering::Relaxed);
            match ioctl(fd, RUN, 0) {
                Ok(_) => {}
                Err(libc::EINTR) => {}
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        last
    })
}

/// Stops runner threads: sets `stop` and signals them until they return.
fn stop_runners(handles: Vec<std::thread::JoinHandle<i32>>, stop: &AtomicBool) -> Vec<i32> {
    stop.store(true, Ordering::Relaxed);
    let mut out = Vec::new();
    for h in handles {
        while !h.is_finished() {
            // SAFETY: SIGUSR1 has an empty handler; the thread is alive.
            unsafe { libc::pthread_kill(std::os::unix::thread::JoinHandleExt::as_pthread_t(&h), libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(5));
        }
        out.push(h.join().unwrap_or(-1));
    }
    out
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let cpath = CString::new(path.clone()).unwrap();
    // SAFETY: opens the device.
    let dev = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(dev >= 0, "open {path}");
    install_empty_handler(libc::SIGUSR1);
    let mut t = Tap::plan(5);

    // 1. 500 VMs of 4 vCPUs, made and destroyed, each one run briefly.
    let t0 = std::time::Instant::now();
    let mut made = 0;
    let mut ran = 0;
    for _ in 0..500 {
        match spin_vm(dev, 4) {
            Ok(v) => {
                made += 1;
                // One short run: a timer signal ends it.
                if matches!(run_until_timer(v.vcpus[0], 2_000), Err(libc::EINTR) | Ok(_)) {
                    ran += 1;
                }
                v.destroy();
            }
            Err(e) => {
                println!("# VM {made}: errno {e}");
                break;
            }
        }
    }
    t.check(made == 500 && ran == 500, "500 VMs of 4 vCPUs made, run and destroyed", format!("made {made}, ran {ran}"));
    println!("# 500 VMs x 4 vCPUs in {:.1} s", t0.elapsed().as_secs_f64());

    // 2. Close every fd and unmap the run pages while the vCPUs run; the
    //    running KVM_RUNs end with a signal, the next calls fail cleanly.
    let mut ok = true;
    for round in 0..10 {
        let v = spin_vm(dev, 2).expect("VM");
        let stop = Arc::new(AtomicBool::new(false));
        let entries = Arc::new(AtomicU64::new(0));
        let hs: Vec<_> = v.vcpus.iter().map(|&fd| spawn_runner(fd, stop.clone(), entries.clone())).collect();
        std::thread::sleep(Duration::from_millis(30));
        for run in v.runs.iter().filter(|r| !r.is_null()) {
            // SAFETY: unmaps the run page under the running vCPU.
            unsafe { libc::munmap(*run as *mut _, v.mmap_size) };
        }
        close(v.vm);
        for fd in &v.vcpus {
            close(*fd);
        }
        let errs = stop_runners(hs, &stop);
        // A thread ends with EBADF (its fd is closed) or because it saw
        // `stop`; anything else is wrong.
        if errs.iter().any(|&e| e != 0 && e != libc::EBADF) {
            println!("# round {round}: runner errors {errs:?}");
            ok = false;
        }
        // SAFETY: the guest RAM; the VM is gone.
        unsafe { libc::munmap(v.mem as *mut _, MEM) };
    }
    t.check(ok, "10 rounds: run pages unmapped and every fd closed under running vCPUs", "");

    // 3. fork while vCPUs run: the child may not use the parent's VM (EIO,
    //    as KVM), and exits; the parent's vCPUs keep running.
    let v = spin_vm(dev, 2).expect("VM");
    let stop = Arc::new(AtomicBool::new(false));
    let entries = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = v.vcpus.iter().map(|&fd| spawn_runner(fd, stop.clone(), entries.clone())).collect();
    std::thread::sleep(Duration::from_millis(20));
    let mut child_ok = true;
    for _ in 0..5 {
        // SAFETY: fork; the child only makes raw system calls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut regs = [0u8; 144];
            let r = ioctl(v.vcpus[0], GET_REGS, regs.as_mut_ptr() as u64);
            let r2 = ioctl(v.vm, CREATE_VCPU, 9);
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(if r == Err(libc::EIO) && r2 == Err(libc::EIO) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        child_ok &= libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    }
    let before = entries.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    let kept_running = hs.iter().all(|h| !h.is_finished());
    let errs = stop_runners(hs, &stop);
    v.destroy();
    t.check(child_ok && kept_running && errs.iter().all(|&e| e == 0), "fork while vCPUs run: the child gets EIO, the parent runs on", format!("child_ok={child_ok} running={kept_running} entries={before} errs={errs:?}"));

    // 4. kill -9 and plain exit of processes whose vCPUs are running.
    let mut all_ended = true;
    for round in 0..10 {
        // SAFETY: fork; the child runs vCPU threads until killed or exiting.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let v = spin_vm(dev, 2).expect("VM");
            let stop = Arc::new(AtomicBool::new(false));
            let entries = Arc::new(AtomicU64::new(0));
            let _hs: Vec<_> = v.vcpus.iter().map(|&fd| spawn_runner(fd, stop.clone(), entries.clone())).collect();
            std::thread::sleep(Duration::from_millis(30));
            if round % 2 == 1 {
                // Exit with the vCPU threads inside KVM_RUN.
                std::process::exit(0);
            }
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        std::thread::sleep(Duration::from_millis(60));
        if round % 2 == 0 {
            // SAFETY: kills our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waits for our child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let expected = if round % 2 == 0 { libc::WIFSIGNALED(status) } else { libc::WIFEXITED(status) };
        all_ended &= expected;
    }
    t.check(all_ended, "10 processes killed (SIGKILL) or exiting with their vCPUs in KVM_RUN", "");

    // 5. The device still works.
    let ok = match spin_vm(dev, 1) {
        Ok(v) => {
            let r = run_until_timer(v.vcpus[0], 5_000);
            v.destroy();
            r == Err(libc::EINTR)
        }
        Err(_) => false,
    };
    t.check(ok, "afterwards a new VM runs until a signal stops it", "");
    close(dev);
    t.finish();
}
