//! The VM and vCPU ioctls' documented errors (Documentation/virt/kvm/api.rst),
//! on /dev/rvmx or, given as the first argument, /dev/kvm. Prints TAP.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuExit};
use rvmx_selftests::{install_empty_handler, ioctl, Tap};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

const KVM_RUN: u64 = 0xae80;

fn region(slot: u32, gpa: u64, size: u64, uaddr: u64, flags: u32) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot, flags, guest_phys_addr: gpa, memory_size: size, userspace_addr: uaddr }
}

fn anon(size: usize) -> u64 {
    // SAFETY: a fresh anonymous mapping (leaked: the process is short).
    let p = unsafe {
        libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    assert!(p as isize != -1);
    p as u64
}


fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let is_kvm = path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(30);

    t.check(kvm.check_extension(Cap::UserMemory), "KVM_CHECK_EXTENSION(KVM_CAP_USER_MEMORY) = 1", "");
    t.check(kvm.get_nr_memslots() >= 32, "KVM_CAP_NR_MEMSLOTS >= 32", kvm.get_nr_memslots());
    t.check(kvm.get_vcpu_mmap_size().is_ok_and(|s| s >= 2 * 4096), "KVM_GET_VCPU_MMAP_SIZE covers kvm_run and the PIO page", format!("{:?}", kvm.get_vcpu_mmap_size()));

    let vm = kvm.create_vm().expect("KVM_CREATE_VM");
    let mem = anon(4 << 20);
    let set = |r: kvm_userspace_memory_region| -> Result<(), i32> {
        // SAFETY: every region given either is backed by `mem` or is refused.
        unsafe { vm.set_user_memory_region(r) }.map_err(|e| e.errno())
    };
    t.expect_eq(set(region(0x8000, 0, 0x1000, mem, 0)), Err(libc::EINVAL), "slot id out of range: EINVAL");
    t.expect_eq(set(region(0, 0x1001, 0x1000, mem, 0)), Err(libc::EINVAL), "unaligned guest_phys_addr: EINVAL");
    t.expect_eq(set(region(0, 0, 0x1001, mem, 0)), Err(libc::EINVAL), "unaligned memory_size: EINVAL");
    t.expect_eq(set(region(0, 0, 0x1000, mem + 1, 0)), Err(libc::EINVAL), "unaligned userspace_addr: EINVAL");
    t.expect_eq(set(region(0, 0, 1 << 50, mem, 0)), Err(libc::EINVAL), "huge memory_size: EINVAL");
    t.expect_eq(set(region(0, 0, 0x1000, mem, 1 << 7)), Err(libc::EINVAL), "unknown flags: EINVAL");
    t.expect_eq(set(region(5, 0, 0, 0, 0)), Err(libc::EINVAL), "deleting a slot that does not exist: EINVAL");
    t.expect_eq(set(region(0, 0, 2 << 20, mem, 0)), Ok(()), "slot 0 at [0, 2M)");
    t.expect_eq(set(region(1, 1 << 20, 2 << 20, mem + (2 << 20), 0)), Err(libc::EEXIST), "overlapping slot: EEXIST");
    t.expect_eq(set(region(0, 0, 0, 0, 0)).and(set(region(0, 0, 2 << 20, mem, 0))), Ok(()), "delete by size 0, then re-create");

    let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
    t.expect_eq(vm.create_vcpu(0).map(|_| ()).map_err(|e| e.errno()), Err(libc::EEXIST), "duplicate vCPU id: EEXIST");
    t.expect_eq(vm.create_vcpu(100_000).map(|_| ()).map_err(|e| e.errno()), Err(libc::EINVAL), "vCPU id out of range: EINVAL");
    // No fd left for the vCPU: EMFILE, and its id is not used up by the
    // failed call (issue 9: the id leaked).
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let old = lim;
        // SAFETY: a dup'ed descriptor tells the lowest free fd number.
        let lowest = unsafe { libc::dup(0) };
        // SAFETY: closes the descriptor just made.
        unsafe { libc::close(lowest) };
        lim.rlim_cur = lowest as u64;
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
        let r = vm.create_vcpu(7).map(|_| ()).map_err(|e| e.errno());
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
        t.expect_eq(r, Err(libc::EMFILE), "KVM_CREATE_VCPU with no free fd: EMFILE");
        t.check(vm.create_vcpu(7).is_ok(), "the id of a vCPU whose fd failed can be used again", "");
    }

    // vCPU ids and their number, as KVM's kvm_vm_ioctl_create_vcpu: an id
    // of KVM_CAP_MAX_VCPU_ID or more is EINVAL, a live id EEXIST, and no
    // more than KVM_CAP_MAX_VCPUS vCPUs exist (EINVAL past them). A vCPU
    // lives while its stats fd does, and keeps its id (issue 23: rvmx
    // freed the id when the vCPU fd was closed; 256 live vCPUs with id 0).
    {
        const KVM_GET_STATS_FD: u64 = 0xaece;
        let max = kvm.get_max_vcpus();
        let max_id = kvm.get_max_vcpu_id();
        let vm3 = kvm.create_vm().unwrap();
        let v0 = vm3.create_vcpu(0).unwrap();
        let stats = ioctl(v0.as_raw_fd(), KVM_GET_STATS_FD, 0);
        drop(v0);
        let again = vm3.create_vcpu(0).map(|_| ()).map_err(|e| e.errno());
        t.expect_eq((stats.is_ok(), again), (true, Err(libc::EEXIST)),
                    "vCPU fd closed, its stats fd open: KVM_CREATE_VCPU with its id is EEXIST");
        if let Ok(fd) = stats {
            // SAFETY: closes the stats fd made above.
            unsafe { libc::close(fd) };
        }
        t.expect_eq(vm3.create_vcpu(max_id as u64).map(|_| ()).map_err(|e| e.errno()), Err(libc::EINVAL),
                    "vCPU id KVM_CAP_MAX_VCPU_ID: EINVAL");
        // KVM_CAP_MAX_VCPUS vCPUs (1024 on KVM: room for their fds first).
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let want = (max as u64 + 64).max(lim.rlim_cur);
        let more = libc::rlimit { rlim_cur: want, rlim_max: want.max(lim.rlim_max) };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &more) };
        let vm4 = kvm.create_vm().unwrap();
        let mut fds = Vec::new();
        let mut first_err = None;
        for id in 0..max as u64 {
            match vm4.create_vcpu(id) {
                Ok(v) => fds.push(v),
                Err(e) => {
                    first_err = Some((id, e.errno()));
                    break;
                }
            }
        }
        t.expect_eq((fds.len(), first_err), (max, None), "KVM_CAP_MAX_VCPUS vCPUs in one VM");
        // The next one: EINVAL, whichever free id it asks for (on rvmx the
        // ids end at the same number, so the id is refused too).
        let next = vm4.create_vcpu(max as u64).map(|_| ()).map_err(|e| e.errno());
        t.expect_eq(next, Err(libc::EINVAL), "one vCPU more than KVM_CAP_MAX_VCPUS: EINVAL");
        drop(fds);
        drop(vm4);
    }

    // Another process (a forked child) may not use the VM: EIO.
    // SAFETY: the child only makes system calls and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let r = ioctl(vm.as_raw_fd(), 0xae03, 0); // KVM_CHECK_EXTENSION on the VM fd
        // SAFETY: ends the child.
        unsafe { libc::_exit(if r == Err(libc::EIO) { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    t.check(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "VM ioctl from another process: EIO", status);

    // A slot whose userspace_addr maps nothing: KVM_RUN fails with EFAULT
    // (at the first instruction fetch, at F000:FFF0 with CS.base 0xf0000).
    let vm2 = kvm.create_vm().unwrap();
    // SAFETY: the range is unmapped on purpose.
    unsafe { vm2.set_user_memory_region(region(0, 0, 0x10_0000, 0x7000_0000_0000, 0)).unwrap() };
    let mut vcpu2 = vm2.create_vcpu(0).unwrap();
    let mut s = vcpu2.get_sregs().unwrap();
    s.cs.base = 0xf0000;
    vcpu2.set_sregs(&s).unwrap();
    let r = vcpu2.run().map(|e| format!("{e:?}")).map_err(|e| e.errno());
    t.expect_eq(r, Err(libc::EFAULT), "guest memory not mapped in the launcher: KVM_RUN fails with EFAULT");

    if is_kvm {
        // KVM maps the vCPU pages lazily (a bad offset or size only
        // SIGBUSes on access).
        t.skip("mmap beyond the vCPU pages", "KVM maps lazily");
        t.skip("mmap larger than the vCPU pages", "KVM maps lazily");
    } else {
        let size = kvm.get_vcpu_mmap_size().unwrap() + 4096;
        // SAFETY: a mapping request the kernel must refuse.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ, libc::MAP_SHARED, vcpu.as_raw_fd(), 0) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        t.check(p == libc::MAP_FAILED && errno == Some(libc::EINVAL), "mmap larger than the vCPU pages: EINVAL", format!("{errno:?}"));
        // SAFETY: a mapping request the kernel must refuse.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, vcpu.as_raw_fd(), 16 * 4096) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        t.check(p == libc::MAP_FAILED && errno == Some(libc::EINVAL), "mmap beyond the vCPU pages: EINVAL", format!("{errno:?}"));
    }

    // Closing in any order frees everything (vm.sh then checks that the
    // module unloads): the VM fd before its vCPU's fd, and the vCPU fd while
    // its pages are still mapped; the mapping stays usable until munmap.
    {
        let vm4 = kvm.create_vm().unwrap();
        let mut vcpu4 = vm4.create_vcpu(0).unwrap();
        let size = kvm.get_vcpu_mmap_size().unwrap();
        // SAFETY: maps the vCPU's pages; unmapped below.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ, libc::MAP_SHARED, vcpu4.as_raw_fd(), 0) };
        assert!(p != libc::MAP_FAILED);
        drop(vm4);
        let regs = vcpu4.get_regs().map(|r| r.rip).map_err(|e| e.errno());
        t.expect_eq(regs, Ok(0xfff0), "the VM fd closed first: its vCPU still answers KVM_GET_REGS");
        let before = vcpu4.get_kvm_run().exit_reason;
        drop(vcpu4);
        // SAFETY: the mapping is still ours; kvm_run's exit_reason is at offset 8.
        let after = unsafe { (p as *const u32).add(2).read_volatile() };
        t.expect_eq(after, before, "the vCPU fd closed while mapped: the mapping still reads its run page");
        // SAFETY: unmaps what we mapped.
        let r = unsafe { libc::munmap(p, size) };
        t.expect_eq(r, 0, "munmap after both fds are closed");
    }

    // Two KVM_RUNs on one vCPU: the second waits; a signal ends its wait.
    // (rvmx only: KVM's vCPU lock yields to fatal signals only, so there the
    // waiter would go on to run the guest itself.)
    drop(vcpu);
    if is_kvm {
        t.skip("a second KVM_RUN waits while the first runs", "rvmx-specific");
        t.skip("a signal ends the wait", "KVM's vCPU lock yields to fatal signals only");
        t.finish();
    }
    let mut v3 = vm.create_vcpu(1).unwrap();
    // SAFETY: the slot's memory is `mem`; write `sti; jmp $` at the reset
    // vector (real mode, F000:FFF0 = 0xffff0 is inside the 2 MiB slot). STI:
    // see guests.rs, Bochs takes external-interrupt exits only with IF=1.
    unsafe { std::ptr::copy_nonoverlapping([0xfbu8, 0xeb, 0xfe].as_ptr(), (mem + 0xffff0) as *mut u8, 3) };
    install_empty_handler(libc::SIGUSR1);
    let mut s = v3.get_sregs().unwrap();
    s.cs.base = 0xf0000; // so that CS:IP F000:FFF0 is 0xffff0, in the slot
    v3.set_sregs(&s).unwrap();
    let fd = v3.as_raw_fd();
    let first_tid = Arc::new(AtomicI32::new(0));
    let second_done = Arc::new(AtomicBool::new(false));
    let ft = first_tid.clone();
    let first = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        ft.store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let r = v3.run().map(|e| matches!(e, VcpuExit::Intr)).map_err(|e| e.errno());
        (r, v3)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sd = second_done.clone();
    let second = std::thread::spawn(move || {
        let r = ioctl(fd, KVM_RUN, 0);
        sd.store(true, Ordering::SeqCst);
        r
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let waited = !second_done.load(Ordering::SeqCst);
    t.check(waited, "a second KVM_RUN waits while the first runs", "");
    // SAFETY: signals our own second thread.
    unsafe { libc::pthread_kill(std::os::unix::thread::JoinHandleExt::as_pthread_t(&second), libc::SIGUSR1) };
    let r2 = second.join().unwrap();
    // SAFETY: signals our own first thread.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), first_tid.load(Ordering::SeqCst), libc::SIGUSR1) };
    let (r1, _v) = first.join().unwrap();
    t.check(r2 == Err(libc::EINTR) && r1 == Err(libc::EINTR), "a signal ends the wait (EINTR), and the first run", format!("second={r2:?} first={r1:?}"));
    t.finish();
}
