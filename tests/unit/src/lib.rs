//! rvmx's kernel-independent logic, built for the build machine so that
//! `cargo test` can check and fuzz it in seconds (no emulator). Each module
//! is the module's own source file, included unchanged.
#![no_std]
#![allow(dead_code)]

#[path = "../../../exits/decode.rs"]
pub mod decode;

#[path = "../../../addr.rs"]
pub mod addr;

#[path = "../../../walk.rs"]
pub mod walk;

// The control bits vmcs/checks.rs tests (`super::controls` there).
#[allow(dead_code)]
#[path = "../../../vmcs/controls.rs"]
pub mod controls;
#[path = "../../../vmcs/checks.rs"]
pub mod checks;

#[path = "../../../hw/cr.rs"]
pub mod cr;

#[path = "../../../vmcs/qualification.rs"]
pub mod qualification;

#[path = "../../../msrs/bitmap.rs"]
pub mod msr_bitmap;

#[path = "../../../msrs/emulated.rs"]
pub mod emulated;

#[path = "../../../exits/exception_rules.rs"]
pub mod exception_rules;

#[path = "../../../vpid.rs"]
pub mod vpid;

#[path = "../../rng.rs"]
mod rng;
pub use rng::Rng;

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod decode_tests;

#[cfg(test)]
mod vpid_tests;

#[cfg(test)]
mod walk_tests;

#[cfg(test)]
mod checks_tests;

#[cfg(test)]
mod cr_tests;

#[cfg(test)]
mod msr_bitmap_tests;

#[cfg(test)]
mod emulated_msr_tests;

#[cfg(test)]
mod exception_rules_tests;

/// The fuzz seed: `RVMX_SEED` if set (to reproduce a failure), else the
/// clock, so that every run explores new inputs. Printed by each fuzz test.
#[cfg(test)]
pub(crate) fn seed() -> u64 {
    match std::env::var("RVMX_SEED") {
        Ok(s) => s.parse().expect("RVMX_SEED must be a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

#[cfg(test)]
mod qualification_tests;
