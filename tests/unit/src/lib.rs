//! rvmx's kernel-independent logic, built for the build machine so that
//! `cargo test` can check and fuzz it in seconds (no emulator). Each module
//! is the module's own source file, included unchanged.
#![no_std]
#![allow(dead_code)]

#[path = "../../../exits/decode.rs"]
pub mod decode;

#[path = "../../../walk.rs"]
pub mod walk;

/// A small, seeded pseudo-random generator for the fuzz tests
/// (xorshift64*: the tests need reproducible streams from a printed seed,
/// not statistical quality, and this keeps them free of a dependency).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod decode_tests;

#[cfg(test)]
mod walk_tests;

/// The fuzz seed: `RVMX_SEED` if set (to reproduce a failure), else the
/// clock, so that every run explores new inputs. Printed by each fuzz test.
#[cfg(test)]
pub(crate) fn seed() -> u64 {
    match std::env::var("RVMX_SEED") {
        Ok(s) => s.parse().expect("RVMX_SEED must be a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}
