//! A tiny TAP producer for rvmx's kselftest-style test programs: each
//! program declares its plan, reports `ok N - name` / `not ok N - name`
//! (with `# SKIP reason` where a check cannot run), and exits non-zero if
//! anything failed.

use std::fmt::Display;

/// One test program's TAP stream.
pub struct Tap {
    planned: usize,
    n: usize,
    failed: usize,
}

impl Tap {
    /// Starts a stream of `planned` tests.
    pub fn plan(planned: usize) -> Self {
        println!("TAP version 13");
        println!("1..{planned}");
        Tap { planned, n: 0, failed: 0 }
    }

    /// Reports one check; `detail` is printed as a diagnostic on failure.
    pub fn check(&mut self, ok: bool, name: &str, detail: impl Display) {
        self.n += 1;
        if ok {
            println!("ok {} - {name}", self.n);
        } else {
            self.failed += 1;
            println!("not ok {} - {name}", self.n);
            println!("# {detail}");
        }
    }

    /// Compares an ioctl-style result with what is expected.
    pub fn expect_eq<T: PartialEq + std::fmt::Debug>(&mut self, got: T, want: T, name: &str) {
        let ok = got == want;
        self.check(ok, name, format!("got {got:?}, want {want:?}"));
    }

    /// Ends the stream; the process exit status says whether all passed.
    pub fn finish(self) -> ! {
        if self.n != self.planned {
            println!("# planned {} tests but ran {}", self.planned, self.n);
            std::process::exit(1);
        }
        std::process::exit(if self.failed == 0 { 0 } else { 1 });
    }
}

/// Result of a raw ioctl: the return value, or the errno.
pub fn ioctl(fd: i32, req: u64, arg: u64) -> Result<i32, i32> {
    // SAFETY: the callers pass integer arguments (or none), never pointers
    // to memory the kernel might write, so no Rust memory is at stake.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}
