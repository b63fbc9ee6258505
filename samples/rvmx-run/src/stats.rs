//! A reader of KVM's binary statistics files (KVM_GET_STATS_FD), written
//! from Documentation/virt/kvm/api.rst, not from rvmx's code: it reads
//! rvmx's and KVM's files alike. tests/selftests uses this same file.
//!
//! The file: a header (flags, name_size, num_desc, id_offset, desc_offset,
//! data_offset: six u32), an id string of name_size bytes, num_desc
//! descriptors (flags u32, exponent i16, size u16, offset u32,
//! bucket_size u32, then a name of name_size bytes), and the values (u64)
//! at data_offset + each descriptor's offset.

use std::collections::BTreeMap;

/// KVM_GET_STATS_FD, on a VM or vCPU fd.
pub const KVM_GET_STATS_FD: u64 = 0xaece;

/// A statistics file, read: its id and each statistic's first value.
pub struct Stats {
    pub id: String,
    pub values: BTreeMap<String, u64>,
}

fn pread(fd: i32, buf: &mut [u8], off: usize) -> Result<(), String> {
    // SAFETY: reads into `buf`, which is ours and `buf.len()` long.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off as i64) };
    if n != buf.len() as isize {
        return Err(format!("pread of {} bytes at {off}: {n}", buf.len()));
    }
    Ok(())
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_ne_bytes(b[i..i + 4].try_into().unwrap())
}

fn c_string(b: &[u8]) -> Result<String, String> {
    let end = b.iter().position(|&c| c == 0).ok_or("a name is not NUL-terminated")?;
    Ok(String::from_utf8_lossy(&b[..end]).into_owned())
}

/// Opens the statistics file of a VM or vCPU fd.
pub fn open(fd: i32) -> Result<i32, String> {
    // SAFETY: an ioctl without an argument.
    let r = unsafe { libc::ioctl(fd, KVM_GET_STATS_FD as _, 0) };
    if r < 0 {
        return Err(format!("KVM_GET_STATS_FD: {}", std::io::Error::last_os_error()));
    }
    Ok(r)
}

/// Reads a whole statistics file (at any time: each read is a snapshot).
pub fn read(fd: i32) -> Result<Stats, String> {
    let mut h = [0u8; 24];
    pread(fd, &mut h, 0)?;
    let (flags, name_size, num_desc) = (u32_at(&h, 0), u32_at(&h, 4) as usize, u32_at(&h, 8) as usize);
    let (id_off, desc_off, data_off) = (u32_at(&h, 12) as usize, u32_at(&h, 16) as usize, u32_at(&h, 20) as usize);
    if flags != 0 || name_size == 0 || name_size > 4096 || num_desc == 0 || num_desc > 10_000 {
        return Err(format!("header: flags {flags} name_size {name_size} num_desc {num_desc}"));
    }
    let mut id = vec![0u8; name_size];
    pread(fd, &mut id, id_off)?;
    let desc_size = 16 + name_size;
    let mut descs = vec![0u8; num_desc * desc_size];
    pread(fd, &mut descs, desc_off)?;
    let mut values = BTreeMap::new();
    for d in descs.chunks(desc_size) {
        let size = u16::from_ne_bytes([d[6], d[7]]) as usize;
        let offset = u32_at(d, 8) as usize;
        let mut v = vec![0u8; 8 * size.max(1)];
        pread(fd, &mut v, data_off + offset)?;
        values.insert(c_string(&d[16..])?, u64::from_ne_bytes(v[..8].try_into().unwrap()));
    }
    Ok(Stats { id: c_string(&id)?, values })
}

/// The VMX basic exit reasons (Intel SDM Vol. 3D, Appendix C), by number.
pub fn exit_reason_name(n: u32) -> &'static str {
    const NAMES: [&str; 80] = [
        "exception or NMI", "external interrupt", "triple fault", "INIT signal", "SIPI", "I/O SMI", "other SMI",
        "interrupt window", "NMI window", "task switch", "CPUID", "GETSEC", "HLT", "INVD", "INVLPG", "RDPMC",
        "RDTSC", "RSM", "VMCALL", "VMCLEAR", "VMLAUNCH", "VMPTRLD", "VMPTRST", "VMREAD", "VMRESUME", "VMWRITE",
        "VMXOFF", "VMXON", "control-register access", "MOV DR", "I/O instruction", "RDMSR", "WRMSR",
        "entry failure: guest state", "entry failure: MSR loading", "(35)", "MWAIT", "monitor trap flag", "(38)",
        "MONITOR", "PAUSE", "entry failure: machine check", "(42)", "TPR below threshold", "APIC access",
        "virtualized EOI", "GDTR/IDTR access", "LDTR/TR access", "EPT violation", "EPT misconfiguration",
        "INVEPT", "RDTSCP", "preemption timer", "INVVPID", "WBINVD/WBNOINVD", "XSETBV", "APIC write", "RDRAND",
        "INVPCID", "VMFUNC", "ENCLS", "RDSEED", "PML full", "XSAVES", "XRSTORS", "PCONFIG", "SPP event",
        "UMWAIT", "TPAUSE", "LOADIWKEY", "ENCLV", "(71)", "ENQCMD PASID", "ENQCMDS PASID", "bus lock",
        "instruction timeout", "SEAMCALL", "TDCALL", "RDMSRLIST", "WRMSRLIST",
    ];
    NAMES.get(n as usize).copied().unwrap_or("(unknown)")
}
