// SPDX-License-Identifier: GPL-2.0

//! VPIDs (virtual-processor identifiers, SDM Vol. 3C §29.1): the CPU tags
//! the linear translations it caches with the VPID of the vCPU that made
//! them (the host's are VPID 0), so a VM entry or exit need not flush the
//! TLB. In return rvmx must flush a vCPU's VPID wherever its translations
//! may be stale: on a CPU the vCPU arrives on (it may have changed its page
//! tables elsewhere meanwhile, and a freed VPID's old translations may still
//! sit there), and after userspace rewrites its paging registers
//! (vcpu/run.rs, `flush_tlb`). Each vCPU has its own, from this allocator.
//!
//! VPIDs can run out (one user may hold many vCPUs): a vCPU created then
//! gets none and runs with "enable VPID" off, so that every VM entry and
//! exit flushes the linear and combined translations of VPID 0 (SDM Vol. 3C
//! §29.4.3.1), as KVM's vCPUs without one: slower, never less isolated.
//!
//! A fixed bitmap of atomics rather than the kernel's IDA, which 6.12's
//! Rust bindings do not wrap: 65535 ids, allocated and freed lock-free.

use core::sync::atomic::{AtomicU64, Ordering};

const WORDS: usize = 1024;
static USED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// An allocated VPID (never 0); freed on drop.
pub(crate) struct Vpid(u16);

impl Vpid {
    /// A free VPID, or `None` when all 65535 are taken (the vCPU then runs
    /// without one, as KVM's do).
    pub(crate) fn alloc() -> Option<Vpid> {
        for (w, word) in USED.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            loop {
                // Bit 0 of word 0 is VPID 0, the host's: never handed out.
                let free = !cur & if w == 0 { !1 } else { !0 };
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match word.compare_exchange(cur, cur | (1 << bit), Ordering::Acquire, Ordering::Relaxed) {
                    // CAST: w < 1024 and bit < 64, so the id fits in 16 bits.
                    Ok(_) => return Some(Vpid((w * 64 + bit as usize) as u16)),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    pub(crate) fn get(&self) -> u16 {
        self.0
    }
}

impl Drop for Vpid {
    fn drop(&mut self) {
        let id = usize::from(self.0);
        USED[id / 64].fetch_and(!(1 << (id % 64)), Ordering::Release);
    }
}
