//! vpid.rs: every VPID but 0 can be handed out once; when all are taken a
//! vCPU gets none (and runs without, flushing at every entry and exit, as
//! KVM's vCPUs without a VPID), and a freed one is handed out again.

use crate::vpid::Vpid;
use std::vec::Vec;

#[test]
fn vpids_run_out_and_come_back() {
    let mut all = Vec::new();
    while let Some(v) = Vpid::alloc() {
        assert_ne!(v.get(), 0, "VPID 0 is the host's");
        all.push(v);
    }
    assert_eq!(all.len(), 65535, "every VPID but 0");
    assert!(Vpid::alloc().is_none(), "none left: the vCPU runs without one");
    let freed = all.swap_remove(1234).get();
    let again = Vpid::alloc().map(|v| v.get());
    assert_eq!(again, Some(freed), "a freed VPID is handed out again");
}
