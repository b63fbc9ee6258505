// SPDX-License-Identifier: GPL-2.0

//! The MSR bitmap's layout (SDM Vol. 3C §25.6.9, "MSR-Bitmap Address"): a
//! 4 KiB page with one bit per MSR and direction; a set bit makes the
//! guest's RDMSR or WRMSR of that MSR exit, a clear bit lets the guest reach
//! the CPU's register directly. Four 1 KiB parts, in this order: reads of
//! MSRs 0..0x1fff, reads of 0xc000_0000..0xc000_1fff, writes of the first
//! range, writes of the second. An MSR outside both ranges always exits.
//!
//! Which MSRs pass is msrs/mod.rs's policy; this file only places the bits.
//! Pure logic, `core` only: built into rvmx.ko and into `tests/unit`.

/// The page, as the CPU reads it.
pub(crate) type MsrBitmap = [u8; 4096];

/// A direction of access: the guest's RDMSR or its WRMSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Read,
    Write,
}

/// Where `index`'s bit for `access` is: (byte, bit), or `None` for an MSR
/// outside the two ranges the bitmap covers.
pub(crate) fn position(index: u32, access: Access) -> Option<(usize, u8)> {
    let (part, offset) = match index {
        0..=0x1fff => (0, index),
        0xc000_0000..=0xc000_1fff => (1024, index - 0xc000_0000),
        _ => return None,
    };
    let dir = match access {
        Access::Read => 0,
        Access::Write => 2048,
    };
    // CAST: `offset` < 0x2000, so the byte is < 1024 + 2048 + 1024 = 4096.
    Some((dir + part + (offset / 8) as usize, (offset % 8) as u8))
}

/// Makes every access exit.
pub(crate) fn intercept_all(bitmap: &mut MsrBitmap) {
    bitmap.fill(0xff);
}

/// Lets the guest's `access` of MSR `index` reach the CPU without an exit
/// (nothing to do for an MSR the bitmap does not cover: it always exits).
pub(crate) fn pass(bitmap: &mut MsrBitmap, index: u32, access: Access) {
    if let Some((byte, bit)) = position(index, access) {
        bitmap[byte] &= !(1 << bit);
    }
}

/// Whether the guest's `access` of MSR `index` exits, as the CPU decides:
/// the lookup tests/unit checks `pass` against (rvmx.ko does not need it).
#[allow(dead_code)]
pub(crate) fn exits(bitmap: &MsrBitmap, index: u32, access: Access) -> bool {
    match position(index, access) {
        Some((byte, bit)) => bitmap[byte] & (1 << bit) != 0,
        None => true,
    }
}
