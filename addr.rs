// SPDX-License-Identifier: GPL-2.0

//! The three kinds of address a hypervisor juggles, as three types, so that
//! one is never passed where another is meant:
//!
//! - `Linear`: a guest *linear* address (segment base + offset), what the
//!   guest's instructions use; the guest's own page tables turn it into
//! - `Gpa`: a *guest-physical* address, what the guest believes is RAM or a
//!   device; EPT (the host's tables for the guest, ept.rs) turns it into
//! - `Hpa`: a *host-physical* address, real memory: what EPT entries, the
//!   VMCS's pointers (EPTP, MSR bitmap, VMCS itself) and VMXON hold.
//!
//! Pure (`core` only): the page walker (walk.rs) and its unit tests use
//! these too. Arithmetic on them is explicit about overflow: a guest
//! controls most of these values and may put them near 2^64.

/// The size of a 4 KiB page, the unit of every mapping rvmx makes.
pub(crate) const PAGE_SIZE: u64 = 4096;

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Default)]
        #[repr(transparent)]
        pub(crate) struct $name(pub(crate) u64);

        #[allow(dead_code)] // Not every kind of address uses every helper.
        impl $name {
            /// The address `n` bytes further on, wrapping at 2^64 (the
            /// caller decides what a wrap means: for a linear address the
            /// CPU wraps too).
            pub(crate) const fn wrapping_add(self, n: u64) -> Self {
                Self(self.0.wrapping_add(n))
            }
            /// The address `n` bytes further on, or `None` past 2^64.
            pub(crate) const fn checked_add(self, n: u64) -> Option<Self> {
                match self.0.checked_add(n) {
                    Some(a) => Some(Self(a)),
                    None => None,
                }
            }
            /// The offset within its 4 KiB page.
            pub(crate) const fn page_offset(self) -> u64 {
                self.0 % PAGE_SIZE
            }
            /// The start of its 4 KiB page.
            pub(crate) const fn page_base(self) -> Self {
                Self(self.0 & !(PAGE_SIZE - 1))
            }
            /// Its 4 KiB page number (the frame number, for a physical one).
            pub(crate) const fn page_number(self) -> u64 {
                self.0 / PAGE_SIZE
            }
        }
    };
}

address!(
    /// A guest linear address: before the guest's paging.
    Linear
);
address!(
    /// A guest-physical address: after the guest's paging, before EPT.
    Gpa
);
address!(
    /// A host-physical address: real memory, after EPT.
    Hpa
);
