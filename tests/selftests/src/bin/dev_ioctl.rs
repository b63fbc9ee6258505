//! /dev/rvmx (or /dev/kvm, given as the first argument): the device node and
//! its system ioctls, checked against what KVM's API documents
//! (Documentation/virt/kvm/api.rst §4.1 KVM_GET_API_VERSION).

use rvmx_selftests::{ioctl, Tap};
use std::os::unix::{fs::FileTypeExt, fs::PermissionsExt, io::AsRawFd};

const KVMIO: u64 = 0xAE;
/// _IO(KVMIO, 0x00)
const KVM_GET_API_VERSION: u64 = KVMIO << 8;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let mut t = Tap::plan(7);

    let meta = std::fs::metadata(&path);
    t.check(
        meta.as_ref().map(|m| m.file_type().is_char_device()).unwrap_or(false),
        &format!("{path} is a character device"),
        format!("{meta:?}"),
    );
    let mode = meta.as_ref().map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
    t.check(mode == 0o600, &format!("{path} has mode 0600"), format!("mode {mode:o}"));

    let file = match std::fs::OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) => {
            t.check(false, &format!("open {path}"), e);
            for name in ["KVM_GET_API_VERSION", "non-zero argument", "foreign type", "unknown number"] {
                t.check(false, name, "device did not open");
            }
            t.finish();
        }
    };
    t.check(true, &format!("open {path} read-write"), "");
    let fd = file.as_raw_fd();

    t.expect_eq(ioctl(fd, KVM_GET_API_VERSION, 0), Ok(12), "KVM_GET_API_VERSION returns 12");
    t.expect_eq(
        ioctl(fd, KVM_GET_API_VERSION, 1),
        Err(libc::EINVAL),
        "KVM_GET_API_VERSION with a non-zero argument fails with EINVAL",
    );
    // An ioctl of another driver's type: every driver answers ENOTTY.
    t.expect_eq(ioctl(fd, (0x54 << 8) | 0x01, 0), Err(libc::ENOTTY), "foreign ioctl type gives ENOTTY");
    // A number in KVM's range that /dev/rvmx does not implement.
    t.expect_eq(ioctl(fd, (KVMIO << 8) | 0x7f, 0), Err(libc::ENOTTY), "unknown KVM number gives ENOTTY");
    t.finish();
}
