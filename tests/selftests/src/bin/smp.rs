//! SMP guests on /dev/rvmx (or /dev/kvm, the first argument), each vCPU in
//! its own thread, on the 2-CPU emulated machine. Prints TAP.
//!
//! - 4 and 16 vCPUs each add 1 to one shared counter 100,000 times with
//!   LOCK XADD (guests/count.asm): the total must be exact.
//! - Migration stress: 4 vCPUs run guests/migrate.asm (LOCK XADD, CPUID
//!   exits handled in the kernel, OUT exits to userspace) while another
//!   thread moves every vCPU thread to the other host CPU every 2 ms: the
//!   count must be exact, every exit accounted for, and (checked by the
//!   harness) the kernel log clean. A VMCS is active on one CPU at a time,
//!   so this is what exercises the per-CPU VMCS and VPID handling.

use kvm_ioctls::{Kvm, VcpuExit};
use rvmx_selftests::{Tap, TestVm};
use std::ffi::CString;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

const COUNT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/count.bin"));
const MIGRATE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/migrate.bin"));
const CODE: u64 = 0x1000;
const COUNTER: u64 = 0x600;

/// What one vCPU thread saw: exits to userspace by kind, and the error
/// that ended it early, if any.
#[derive(Default, Debug)]
struct Seen {
    hlt: u32,
    io: u32,
    intr: u32,
    other: Option<String>,
}

/// Runs a vCPU until HLT, counting the exits on the way (EINTR is a signal
/// that arrived meanwhile: run again).
fn run_until_hlt(vcpu: &mut kvm_ioctls::VcpuFd) -> Seen {
    let mut seen = Seen::default();
    loop {
        match vcpu.run() {
            Ok(VcpuExit::Hlt) => {
                seen.hlt += 1;
                return seen;
            }
            Ok(VcpuExit::IoOut(0x10, _)) => seen.io += 1,
            Err(e) if e.errno() == libc::EINTR => seen.intr += 1,
            Ok(other) => {
                seen.other = Some(format!("{other:?}"));
                return seen;
            }
            Err(e) => {
                seen.other = Some(format!("KVM_RUN: {e}"));
                return seen;
            }
        }
    }
}

/// Runs `n` vCPUs of one VM, each in its own thread, through `code` with
/// ECX = `rounds`; `shuffle` moves the threads between CPUs meanwhile.
/// Returns the counter and what each thread saw.
fn smp_run(kvm: &Kvm, n: u64, code: &[u8], rounds: u32, shuffle: bool) -> (u32, Vec<Seen>, u32) {
    let vm = TestVm::new(kvm, 2 << 20);
    vm.write(CODE, code);
    let vcpus: Vec<_> = (0..n)
        .map(|id| {
            let v = vm.real_mode_vcpu(kvm, id, CODE);
            let mut r = v.get_regs().unwrap();
            r.rcx = u64::from(rounds);
            v.set_regs(&r).unwrap();
            v
        })
        .collect();
    let tids: Arc<Vec<AtomicI32>> = Arc::new((0..n).map(|_| AtomicI32::new(0)).collect());
    let mut moves = 0;
    let seen = std::thread::scope(|s| {
        let handles: Vec<_> = vcpus
            .into_iter()
            .enumerate()
            .map(|(i, mut vcpu)| {
                let tids = tids.clone();
                s.spawn(move || {
                    // SAFETY: gettid has no preconditions.
                    tids[i].store(unsafe { libc::gettid() }, Ordering::SeqCst);
                    run_until_hlt(&mut vcpu)
                })
            })
            .collect();
        if shuffle {
            let mut cpu = 0;
            while !handles.iter().all(|h| h.is_finished()) {
                cpu ^= 1;
                for (i, tid) in tids.iter().enumerate() {
                    let tid = tid.load(Ordering::SeqCst);
                    if tid == 0 {
                        continue;
                    }
                    // Alternate: even threads to `cpu`, odd ones to the other.
                    let target = cpu ^ (i & 1);
                    // SAFETY: a cpu_set_t built with the libc macros, for a
                    // thread of this process.
                    unsafe {
                        let mut set: libc::cpu_set_t = std::mem::zeroed();
                        libc::CPU_SET(target, &mut set);
                        libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set);
                    }
                    moves += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    (vm.read_u32(COUNTER), seen, moves)
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let kvm = Kvm::new_with_path(CString::new(path).unwrap()).expect("open device");
    let mut t = Tap::plan(7);

    // Limits, as KVM reports them: NR_VCPUS (recommended) and MAX_VCPUS
    // (hard); rvmx allows 64 per VM.
    let (nr, max) = (kvm.get_nr_vcpus(), kvm.get_max_vcpus());
    t.check(nr >= 1 && nr <= max && max >= 64, "KVM_CAP_NR_VCPUS <= KVM_CAP_MAX_VCPUS, and at least 64", format!("nr {nr}, max {max}"));
    let vm = kvm.create_vm().unwrap();
    let all: Vec<_> = (0..64).filter_map(|id| vm.create_vcpu(id).ok()).collect();
    let more: Vec<_> = (0..8).filter_map(|_| kvm.create_vm().ok()).collect();
    let vcpus_in_each = more.iter().filter(|v| v.create_vcpu(0).is_ok()).count();
    t.expect_eq((all.len(), more.len(), vcpus_in_each), (64, 8, 8), "64 vCPUs in one VM, and 8 more VMs at once");
    drop((all, more, vm));

    for n in [4u64, 16] {
        let start = std::time::Instant::now();
        let (total, seen, _) = smp_run(&kvm, n, COUNT, 100_000, false);
        let all_halted = seen.iter().all(|s| s.hlt == 1 && s.other.is_none());
        t.check(all_halted, &format!("{n} vCPUs each ran to HLT"), format!("{seen:?}"));
        t.expect_eq(total, n as u32 * 100_000, &format!("{n} vCPUs x 100,000 LOCK XADD: exact total"));
        println!("# {n} vCPUs: {:.2} s", start.elapsed().as_secs_f64());
    }

    let rounds = 100_000u32;
    let start = std::time::Instant::now();
    let (total, seen, moves) = smp_run(&kvm, 4, MIGRATE, rounds, true);
    let io: u32 = seen.iter().map(|s| s.io).sum();
    let ok = total == 4 * rounds && io == 4 * rounds / 16 && seen.iter().all(|s| s.hlt == 1 && s.other.is_none());
    t.check(ok, "migration stress: 4 vCPUs moved between CPUs while exiting; counts exact",
            format!("total {total} (want {}), OUT exits {io} (want {}), {seen:?}", 4 * rounds, 4 * rounds / 16));
    println!("# migration stress: {moves} affinity changes in {:.2} s", start.elapsed().as_secs_f64());
    t.finish();
}
