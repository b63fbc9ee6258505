//! Events into the guest, MSRs, CPUID and the other setup calls of issue 4,
//! on /dev/rvmx or (first argument) /dev/kvm. Prints TAP.
//!
//! - Interrupts: guests/irq.asm (real mode) and irq32.asm (an IDT) count
//!   vector 0x20; the test injects N through the interrupt-window protocol
//!   (request_interrupt_window, KVM_EXIT_IRQ_WINDOW_OPEN,
//!   ready_for_interrupt_injection, if_flag, KVM_INTERRUPT); the guest's
//!   count must be exactly N. KVM_GET/SET_VCPU_EVENTS.
//! - MSRs: guests/msr.asm takes #GP(0) on an MSR that does not exist,
//!   writes and reads LSTAR, and faults on a non-canonical KERNEL_GS_BASE;
//!   KVM_GET_MSRS then sees the guest's LSTAR; KVM_SET_MSRS/KVM_GET_MSRS
//!   round trips and their errors; KVM_GET_MSR_INDEX_LIST; the guest's
//!   XSETBV.
//! - CPUID: the guest sees exactly the table KVM_SET_CPUID2 set.
//! - KVM_SET_SIGNAL_MASK, KVM_SET_TSS_ADDR, KVM_SET_IDENTITY_MAP_ADDR.

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use rvmx_selftests::{install_empty_handler, ioctl, protected_mode, Tap, TestVm};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;

const IRQ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/irq.bin"));
const IRQ32: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/irq32.bin"));
const MSR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/msr.bin"));
const NMI: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nmi.bin"));
const CODE: u64 = 0x1000;
const LSTAR: u32 = 0xc000_0082;
const STAR: u32 = 0xc000_0081;

/// KVM_INTERRUPT (_IOW(KVMIO, 0x86, struct kvm_interrupt)): kvm-ioctls
/// does not wrap it on x86.
const KVM_INTERRUPT: u64 = 0x4004_ae86;
/// KVM_SET_SIGNAL_MASK (_IOW(KVMIO, 0x8b, struct kvm_signal_mask)).
const KVM_SET_SIGNAL_MASK: u64 = 0x4004_ae8b;

fn interrupt(vcpu: &VcpuFd, vector: u32) -> Result<i32, i32> {
    let irq = vector;
    // SAFETY: KVM_INTERRUPT reads one u32 (struct kvm_interrupt) at `&irq`.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_INTERRUPT as _, &irq) };
    if r < 0 { Err(std::io::Error::last_os_error().raw_os_error().unwrap()) } else { Ok(r) }
}

/// Plays a userspace interrupt controller for `n` interrupts of vector
/// 0x20 against guests/irq.asm or irq32.asm: at each OUT (the guest has
/// IF = 0) it asks for an interrupt window; at KVM_EXIT_IRQ_WINDOW_OPEN it
/// injects with KVM_INTERRUPT. Returns what went wrong, if anything, how
/// often the guest was correctly reported not ready, how many windows
/// opened, and the guest's count of interrupts taken.
fn irq_protocol(vm: &TestVm, vcpu: &mut VcpuFd, n: u32) -> (Option<String>, u32, u32, u32) {
    let (mut injected, mut windows, mut not_ready_seen, mut bad) = (0u32, 0u32, 0u32, None);
    let mut exits = 0;
    while injected < n && exits < 10 * n && bad.is_none() {
        exits += 1;
        let exit = vcpu.run().map(|e| format!("{e:?}")).map_err(|e| e.errno());
        let run = vcpu.get_kvm_run();
        let (ready, if_flag) = (run.ready_for_interrupt_injection, run.if_flag);
        match exit.as_deref() {
            // The guest has IF = 0 here: ask to be told when it can take one.
            Ok(s) if s.starts_with("IoOut(16") => {
                if ready == 0 && if_flag == 0 {
                    not_ready_seen += 1;
                }
                run.request_interrupt_window = 1;
            }
            Ok("IrqWindowOpen") => {
                windows += 1;
                run.request_interrupt_window = 0;
                if ready == 1 && if_flag == 1 {
                    match interrupt(vcpu, 0x20) {
                        Ok(_) => injected += 1,
                        Err(e) => bad = Some(format!("KVM_INTERRUPT: errno {e}")),
                    }
                } else {
                    bad = Some(format!("window open but ready={ready} if_flag={if_flag}"));
                }
            }
            Ok("Hlt") => {}
            other => bad = Some(format!("unexpected {other:?}")),
        }
    }
    // One more round trip delivers the last one and reaches HLT.
    let _ = vcpu.run();
    (bad, not_ready_seen, windows, vm.read_u32(0x500) & 0xffff)
}

fn msrs(entries: &[(u32, u64)]) -> Msrs {
    let e: Vec<_> = entries.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    Msrs::from_entries(&e).unwrap()
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let is_kvm = path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(37);

    // --- Interrupts through the interrupt-window protocol, into the
    // real-mode IVT and into a 32-bit IDT.
    const N: u32 = 50;
    let vm = TestVm::new(&kvm, 2 << 20);
    vm.write(CODE, IRQ32);
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    protected_mode(&vcpu);
    let (bad, not_ready_seen, windows, count) = irq_protocol(&vm, &mut vcpu, N);
    t.check(bad.is_none() && not_ready_seen == N && windows == N && count == N,
            "32-bit guest with an IDT: N interrupts through the window protocol, counted exactly",
            format!("{bad:?}, not ready {not_ready_seen}, windows {windows}, count {count} (N = {N})"));
    drop(vcpu);
    let vm = TestVm::new(&kvm, 2 << 20);
    vm.write(CODE, IRQ);
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    let (bad, not_ready_seen, windows, count) = irq_protocol(&vm, &mut vcpu, N);
    t.check(bad.is_none(), "interrupt-window protocol: no unexpected exit", format!("{bad:?}"));
    t.expect_eq(not_ready_seen, N, "with IF = 0: if_flag = 0 and ready_for_interrupt_injection = 0");
    t.expect_eq(windows, N, "KVM_EXIT_IRQ_WINDOW_OPEN once the guest can take an interrupt");
    t.expect_eq(count, N, "the guest counted exactly the injected interrupts");
    // A vector beyond 255 is EINVAL. A second interrupt while the first is
    // still queued (it is injected only at the next KVM_RUN) replaces it,
    // as in KVM without an in-kernel interrupt controller; KVM_GET_SREGS
    // shows the queued one in interrupt_bitmap.
    t.expect_eq(interrupt(&vcpu, 256), Err(libc::EINVAL), "KVM_INTERRUPT vector 256: EINVAL");
    let both = (interrupt(&vcpu, 0x20), interrupt(&vcpu, 0x21));
    let bitmap = vcpu.get_sregs().map(|s| s.interrupt_bitmap).unwrap_or_default();
    t.expect_eq((both, bitmap), ((Ok(0), Ok(0)), [1u64 << 0x21, 0, 0, 0]), "a second KVM_INTERRUPT replaces the queued one (KVM_GET_SREGS shows it)");
    drop(vcpu);

    // --- NMIs from KVM_NMI reach the guest's NMI handler with IF = 0; two
    // sent at once are both delivered (one after the other's IRET), a
    // third is merged, as on hardware and in KVM.
    if !kvm.check_extension(kvm_ioctls::Cap::UserNmi) {
        t.skip("KVM_NMI", "KVM_CAP_USER_NMI is 0 (no virtual NMIs on this CPU)");
        t.skip("KVM_NMI twice, three times", "no virtual NMIs");
    } else {
        let vm = TestVm::new(&kvm, 2 << 20);
        vm.write(CODE, NMI);
        let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
        let halted = |v: &mut VcpuFd| matches!(v.run(), Ok(VcpuExit::Hlt));
        let mut seen = vec![(halted(&mut vcpu), vm.read_u32(0x500) & 0xffff)];
        for _ in 0..3 {
            let _ = vcpu.nmi();
            seen.push((halted(&mut vcpu), vm.read_u32(0x500) & 0xffff));
        }
        let pending = vcpu.nmi().and_then(|()| vcpu.get_vcpu_events()).map(|e| e.nmi.pending).map_err(|e| e.errno());
        t.check(seen == [(true, 0), (true, 1), (true, 2), (true, 3)] && pending == Ok(1),
                "KVM_NMI: each NMI reaches the guest's handler (IF = 0); KVM_GET_VCPU_EVENTS shows one pending",
                format!("{seen:?}, pending {pending:?}"));
        let _ = vcpu.nmi(); // a second one, beside the one still pending
        let two = (halted(&mut vcpu), vm.read_u32(0x500) & 0xffff);
        let _ = (vcpu.nmi(), vcpu.nmi(), vcpu.nmi());
        let three = (halted(&mut vcpu), vm.read_u32(0x500) & 0xffff);
        t.expect_eq((two, three), ((true, 5), (true, 7)), "KVM_NMI twice: both delivered; three times: two delivered");
    }

    // --- MSRs: the guest's own RDMSR/WRMSR.
    let vm = TestVm::new(&kvm, 2 << 20);
    vm.write(CODE, MSR);
    let mut vcpu = vm.real_mode_vcpu(&kvm, 0, CODE);
    protected_mode(&vcpu);
    let mut s = vcpu.get_sregs().unwrap();
    s.cr4 |= (1 << 18) | (1 << 9); // OSXSAVE (XSETBV allowed), OSFXSR
    vcpu.set_sregs(&s).unwrap();
    let mut outs = Vec::new();
    let end = loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => outs.push((port, u32::from_le_bytes(data.try_into().unwrap_or([0; 4])))),
            Ok(other) => break format!("{other:?}"),
            Err(e) => break format!("errno {}", e.errno()),
        }
    };
    t.expect_eq(end.as_str(), "Hlt", "MSR guest runs to HLT");
    t.expect_eq((vm.read_u32(0x500), vm.read_u32(0x504)), (13, 0), "RDMSR of a missing MSR: #GP with error code 0 in the guest");
    t.expect_eq(outs, vec![(0x10, 0x8123_4560), (0x11, 0xffff_ffff)], "guest WRMSR then RDMSR of LSTAR reads back its value");
    t.expect_eq(vm.read_u32(0x508), 3, "WRMSR of a non-canonical KERNEL_GS_BASE, XSETBV of XCR0 without x87: #GP too");
    let xcr0 = vcpu.get_xcrs().map(|x| x.xcrs[0].value).map_err(|e| e.errno());
    t.expect_eq(xcr0, Ok(3), "the guest's XSETBV of XCR0 = 3 took effect (KVM_GET_XCRS)");
    let mut m = msrs(&[(LSTAR, 0)]);
    let n = vcpu.get_msrs(&mut m).unwrap_or(0);
    t.expect_eq((n, m.as_slice()[0].data), (1, 0xffff_ffff_8123_4560), "KVM_GET_MSRS sees the LSTAR the guest wrote");

    // --- KVM_SET_VCPU_EVENTS: an exception with an error code reaches the
    // guest's handler (the MSR guest's #GP handler, from HLTs at 0x1ff0).
    vm.write(0x1ff0, &[0xf4; 4]);
    vm.write(0x50c, &1u32.to_le_bytes()); // the handler skips one HLT
    let mut regs = vcpu.get_regs().unwrap();
    regs.rip = 0x1ff0;
    vcpu.set_regs(&regs).unwrap();
    let mut ev = vcpu.get_vcpu_events().unwrap_or_default();
    ev.exception.injected = 1;
    ev.exception.nr = 13;
    ev.exception.has_error_code = 1;
    ev.exception.error_code = 0x1234;
    ev.flags = 0;
    let set = vcpu.set_vcpu_events(&ev).map_err(|e| e.errno());
    let end = vcpu.run().map(|e| format!("{e:?}")).map_err(|e| e.errno());
    t.expect_eq((set, end, vm.read_u32(0x504), vm.read_u32(0x508)), (Ok(()), Ok("Hlt".to_string()), 0x1234, 4),
                "KVM_SET_VCPU_EVENTS: #GP with error code 0x1234 reaches the guest's handler");
    ev.exception.nr = 2;
    let nmi_vector = vcpu.set_vcpu_events(&ev).map_err(|e| e.errno());
    ev.exception.nr = 13;
    ev.flags = 1 << 12;
    t.expect_eq((nmi_vector, vcpu.set_vcpu_events(&ev).map_err(|e| e.errno())), (Err(libc::EINVAL), Err(libc::EINVAL)),
                "KVM_SET_VCPU_EVENTS: exception vector 2, unknown flags: EINVAL");
    let _ = interrupt(&vcpu, 0x30);
    let ev = vcpu.get_vcpu_events().map(|e| (e.interrupt.injected, e.interrupt.nr)).map_err(|e| e.errno());
    t.expect_eq(ev, Ok((1, 0x30)), "KVM_GET_VCPU_EVENTS shows the interrupt KVM_INTERRUPT queued");

    // --- KVM_SET_VCPU_EVENTS with both shadow bits (MOV SS = 1, STI = 2):
    // no CPU is in both, and VM entry refuses the pair; KVM keeps MOV SS
    // only (vmx_set_interrupt_shadow), and the guest runs on to its HLT.
    let svm = TestVm::new(&kvm, 2 << 20);
    svm.write(CODE, &[0x90, 0xf4]); // nop; hlt
    let mut sv = svm.real_mode_vcpu(&kvm, 0, CODE);
    let mut regs = sv.get_regs().unwrap();
    regs.rflags = 0x202; // IF = 1: an STI shadow needs it
    sv.set_regs(&regs).unwrap();
    let mut ev = sv.get_vcpu_events().unwrap_or_default();
    ev.flags = kvm_bindings::KVM_VCPUEVENT_VALID_SHADOW;
    ev.interrupt.shadow = 3;
    let set = sv.set_vcpu_events(&ev).map_err(|e| e.errno());
    let shadow = sv.get_vcpu_events().map(|e| e.interrupt.shadow).map_err(|e| e.errno());
    let end = match sv.run() {
        Ok(VcpuExit::FailEntry(reason, cpu)) => format!("FailEntry({reason:#x}, cpu {cpu})"),
        Ok(e) => format!("{e:?}"),
        Err(e) => format!("errno {}", e.errno()),
    };
    t.expect_eq((set, shadow, end.as_str()), (Ok(()), Ok(1), "Hlt"),
                "KVM_SET_VCPU_EVENTS with STI and MOV SS shadows: MOV SS only is kept, the guest runs to HLT");
    drop(sv);

    // --- MSRs from the VMM.
    let list = kvm.get_msr_index_list().map(|l| l.as_slice().to_vec()).unwrap_or_default();
    t.check(list.contains(&LSTAR) && list.contains(&STAR) && list.contains(&0xc000_0102),
            "KVM_GET_MSR_INDEX_LIST lists STAR, LSTAR, KERNEL_GS_BASE", format!("{list:x?}"));
    let set = msrs(&[(STAR, 0x0023_0010_0000_0000), (0xc000_0084, 0x4700), (0x277, 0x0007_0406_0007_0406)]);
    let wrote = vcpu.set_msrs(&set).unwrap_or(0);
    let mut back = msrs(&[(STAR, 0), (0xc000_0084, 0), (0x277, 0)]);
    let read = vcpu.get_msrs(&mut back).unwrap_or(0);
    let vals: Vec<u64> = back.as_slice().iter().map(|e| e.data).collect();
    t.expect_eq((wrote, read, vals), (3, 3, vec![0x0023_0010_0000_0000, 0x4700, 0x0007_0406_0007_0406]), "KVM_SET_MSRS then KVM_GET_MSRS: STAR, SFMASK, PAT");
    let bad_set = msrs(&[(STAR, 1), (LSTAR, 0x8000_0000_0000), (STAR, 2)]);
    t.expect_eq(vcpu.set_msrs(&bad_set).map_err(|e| e.errno()), Ok(1), "KVM_SET_MSRS stops at a non-canonical LSTAR (returns 1)");
    let mut unknown = msrs(&[(STAR, 0), (0x1234_5678, 0)]);
    t.expect_eq(vcpu.get_msrs(&mut unknown).map_err(|e| e.errno()), Ok(1), "KVM_GET_MSRS stops at an MSR that does not exist");
    let big = msrs(&[(STAR, 0); 256]);
    t.expect_eq(vcpu.set_msrs(&big).map_err(|e| e.errno()), Err(libc::E2BIG), "KVM_SET_MSRS of 256 MSRs: E2BIG");

    // --- CPUID: the guest sees the table that was set.
    let mut cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
    let vmx_offered = cpuid.as_slice().iter().any(|e| e.function == 1 && e.ecx & (1 << 5) != 0);
    if is_kvm {
        t.skip("KVM_GET_SUPPORTED_CPUID does not offer VMX", "KVM offers it (nested)");
    } else {
        t.check(!vmx_offered, "KVM_GET_SUPPORTED_CPUID does not offer VMX", "");
    }
    t.expect_eq(kvm.get_supported_cpuid(1).map(|_| ()).map_err(|e| e.errno()), Err(libc::E2BIG), "KVM_GET_SUPPORTED_CPUID with room for 1 entry: E2BIG");
    for e in cpuid.as_mut_slice() {
        if e.function == 0 {
            e.ebx = u32::from_le_bytes(*b"Test");
        }
    }
    let vm = TestVm::new(&kvm, 2 << 20);
    // xor eax, eax; cpuid; out 0x10, eax (66 E7 10); hlt
    vm.write(CODE, &[0x66, 0x31, 0xc0, 0x0f, 0xa2, 0x66, 0x89, 0xd8, 0x66, 0xe7, 0x10, 0xf4]);
    let mut v = vm.vm.create_vcpu(0).unwrap();
    v.set_cpuid2(&cpuid).unwrap();
    let mut s = v.get_sregs().unwrap();
    s.cs.selector = 0;
    s.cs.base = 0;
    v.set_sregs(&s).unwrap();
    v.set_regs(&kvm_bindings::kvm_regs { rip: CODE, rflags: 2, ..Default::default() }).unwrap();
    let seen = match v.run() {
        Ok(VcpuExit::IoOut(0x10, d)) => u32::from_le_bytes(d.try_into().unwrap_or([0; 4])),
        _ => 0,
    };
    t.expect_eq(seen.to_le_bytes(), *b"Test", "the guest's CPUID leaf 0 EBX is the one KVM_SET_CPUID2 set");
    let back = v.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map(|c| c.as_slice().len());
    t.expect_eq(back, Ok(cpuid.as_slice().len()), "KVM_GET_CPUID2 returns the table");

    // --- KVM_SET_CPUID2 after KVM_RUN: only the same table (EINVAL
    // otherwise, as KVM since 6.0); table-size errors.
    let same = v.set_cpuid2(&cpuid).map_err(|e| e.errno());
    let mut other = cpuid.clone();
    for e in other.as_mut_slice() {
        if e.function == 0 {
            e.ebx ^= 1;
        }
    }
    t.expect_eq((same, v.set_cpuid2(&other).map_err(|e| e.errno())), (Ok(()), Err(libc::EINVAL)),
                "KVM_SET_CPUID2 after KVM_RUN: the same table is accepted, another is EINVAL");
    let big: [u32; 2] = [257, 0]; // struct kvm_cpuid2 { nent, padding }
    // SAFETY: the kernel reads the 8-byte header and refuses before the entries.
    let r = unsafe { libc::ioctl(v.as_raw_fd(), 0x4008_ae90u64 as _, big.as_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    t.check(r < 0 && errno == Some(libc::E2BIG), "KVM_SET_CPUID2 with 257 entries: E2BIG", format!("{r} {errno:?}"));
    t.expect_eq(v.get_cpuid2(1).map(|_| ()).map_err(|e| e.errno()), Err(libc::E2BIG), "KVM_GET_CPUID2 with room for 1 entry: E2BIG");
    let mut list: [u32; 2] = [1, 0]; // struct kvm_msr_list { nmsrs, indices[1] }
    // SAFETY: the kernel writes the count back and refuses before the indices.
    let r = unsafe { libc::ioctl(kvm.as_raw_fd(), 0xc004_ae02u64 as _, list.as_mut_ptr()) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    t.check(r < 0 && errno == Some(libc::E2BIG) && list[0] > 1, "KVM_GET_MSR_INDEX_LIST with room for 1: E2BIG, and the count",
            format!("{r} {errno:?} {}", list[0]));

    // --- KVM_SET_SIGNAL_MASK: the mask in force during KVM_RUN. The thread
    // blocks SIGUSR2, the vCPU's mask blocks nothing: a SIGUSR2 sent while
    // the guest spins ends KVM_RUN with EINTR, and the thread's own mask is
    // back afterwards (the way QEMU kicks its vCPU threads).
    install_empty_handler(libc::SIGUSR2);
    install_empty_handler(libc::SIGUSR1);
    let vm2 = TestVm::new(&kvm, 0x80000);
    vm2.write(CODE, &[0xfb, 0xeb, 0xfe]); // sti; jmp $ (STI: see guests.rs)
    let mut spin = vm2.real_mode_vcpu(&kvm, 0, CODE);
    #[repr(C)]
    struct Mask { len: u32, set: u64 }
    let none_blocked = Mask { len: 8, set: 0 };
    // SAFETY: KVM_SET_SIGNAL_MASK reads the header and 8 bytes of sigset.
    let r = unsafe { libc::ioctl(spin.as_raw_fd(), KVM_SET_SIGNAL_MASK as _, &none_blocked) };
    let fallback = std::sync::atomic::AtomicBool::new(false);
    let tid = std::sync::atomic::AtomicI32::new(0);
    let kill = |sig: libc::c_int| {
        // SAFETY: signals a thread of this process.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid.load(Ordering::SeqCst), sig) };
    };
    let (result, still_blocked) = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            // SAFETY: blocks SIGUSR2 in this thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let r = spin.run().map(|e| format!("{e:?}")).map_err(|e| e.errno());
            // SAFETY: reads this thread's mask.
            let blocked = unsafe {
                let mut cur: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
                libc::sigismember(&cur, libc::SIGUSR2) == 1
            };
            (r, blocked)
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        kill(libc::SIGUSR2);
        for _ in 0..30 {
            if h.is_finished() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if !h.is_finished() {
            // The mask did not let SIGUSR2 through: end the run another way.
            fallback.store(true, Ordering::SeqCst);
            kill(libc::SIGUSR1); // not blocked
        }
        h.join().unwrap()
    });
    let ok = r == 0 && result == Err(libc::EINTR) && !fallback.load(Ordering::SeqCst) && still_blocked;
    t.check(ok, "KVM_SET_SIGNAL_MASK: a signal the thread blocks but the vCPU's mask allows ends KVM_RUN",
            format!("set {r}, run {result:?}, needed fallback {}, thread mask restored {still_blocked}", fallback.load(Ordering::SeqCst)));

    // --- KVM_SET_SIGNAL_MASK: a bad length is EINVAL; NULL clears.
    #[repr(C)]
    struct SigMask { len: u32, set: [u8; 8] }
    let bad = SigMask { len: 4, set: [0; 8] };
    // SAFETY: KVM_SET_SIGNAL_MASK reads the header and `len` bytes after it.
    let r = unsafe { libc::ioctl(v.as_raw_fd(), KVM_SET_SIGNAL_MASK as _, &bad) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    t.check(r < 0 && errno == Some(libc::EINVAL), "KVM_SET_SIGNAL_MASK with len 4: EINVAL", format!("{r} {errno:?}"));
    t.expect_eq(ioctl(v.as_raw_fd(), KVM_SET_SIGNAL_MASK, 0), Ok(0), "KVM_SET_SIGNAL_MASK(NULL) clears the mask");

    // --- KVM_SET_TSS_ADDR / KVM_SET_IDENTITY_MAP_ADDR.
    let vm = kvm.create_vm().unwrap();
    t.expect_eq((vm.set_tss_address(0xfffb_d000).is_ok(), vm.set_tss_address(0xffff_e000).map_err(|e| e.errno())),
                (true, Err(libc::EINVAL)), "KVM_SET_TSS_ADDR: accepted below 4G - 3 pages, EINVAL above");
    let ok = vm.set_identity_map_address(0xfffb_c000).is_ok();
    let _v = vm.create_vcpu(0).unwrap();
    t.expect_eq((ok, vm.set_identity_map_address(0xfffb_c000).map_err(|e| e.errno())), (true, Err(libc::EINVAL)),
                "KVM_SET_IDENTITY_MAP_ADDR: accepted, then EINVAL once a vCPU exists");
    t.finish();
}
