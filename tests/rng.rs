//! The tests' one pseudo-random generator, shared by tests/unit (the
//! host-side fuzzing) and tests/selftests (the ioctl fuzzer, the hostile
//! guests) through `#[path]`: xorshift64*. The tests need streams that a
//! printed seed reproduces, not statistical quality, and this keeps them
//! free of a dependency. Only `core`.

pub struct Rng(pub u64);

// `next` is the generator's step, not an iterator's: a stream never ends.
#[allow(clippy::should_implement_trait)]
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
    /// A number in 0..n (0 when n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        // CAST: an index below the slice's length.
        xs[self.below(xs.len() as u64) as usize]
    }
}
