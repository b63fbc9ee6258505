//! Runs small guests on /dev/rvmx (or /dev/kvm, given as the first
//! argument) through the rust-vmm kvm-ioctls crate, and checks every VM
//! exit they cause: port I/O, HLT, CPUID, MMIO, VMCALL, triple fault, VMX
//! instructions, signals, real, protected and long mode. Prints TAP.
//!
//! The guests are a few hand-assembled instructions each; the comment next
//! to every byte string is its assembly.

use kvm_bindings::{kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_userspace_memory_region, Msrs};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use rvmx_selftests::{install_empty_handler, Tap};
use std::ffi::CString;
use std::os::unix::io::AsRawFd;

const MEM_SIZE: usize = 2 << 20;
const CODE: u64 = 0x1000;

/// Whether the device has KVM_SET_CPUID2 (KVM_CAP_EXT_CPUID): both KVM and
/// rvmx do; the check keeps the program usable on a device without it.
fn has_set_cpuid(kvm: &Kvm) -> bool {
    kvm.check_extension(kvm_ioctls::Cap::ExtCpuid)
}

struct Guest {
    vm: VmFd,
    vcpu: VcpuFd,
    mem: *mut u8,
}

impl Guest {
    /// A VM with 2 MiB of RAM at GPA 0 and one vCPU in real mode at
    /// 0000:1000 running `code`.
    fn real(kvm: &Kvm, code: &[u8]) -> Guest {
        let vm = kvm.create_vm().expect("KVM_CREATE_VM");
        // SAFETY: a fresh anonymous mapping, owned by this guest (leaked at
        // exit, as the process ends).
        let mem = unsafe {
            libc::mmap(std::ptr::null_mut(), MEM_SIZE, libc::PROT_READ | libc::PROT_WRITE,
                       libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        } as *mut u8;
        assert!(mem as isize != -1);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM_SIZE as u64,
            userspace_addr: mem as u64,
        };
        // SAFETY: the region is valid for the VM's lifetime.
        unsafe { vm.set_user_memory_region(region).expect("KVM_SET_USER_MEMORY_REGION") };
        let vcpu = vm.create_vcpu(0).expect("KVM_CREATE_VCPU");
        if has_set_cpuid(kvm) {
            // KVM starts a vCPU with an empty CPUID (no long mode, no SSE):
            // every KVM client sets one. Give it the supported one, without
            // VMX and with the hypervisor bit, as QEMU does (rvmx's default
            // table before KVM_SET_CPUID2 is already that).
            let mut cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).expect("KVM_GET_SUPPORTED_CPUID");
            for e in cpuid.as_mut_slice() {
                if e.function == 1 {
                    e.ecx = (e.ecx & !(1 << 5)) | (1 << 31);
                }
            }
            vcpu.set_cpuid2(&cpuid).expect("KVM_SET_CPUID2");
        }
        let g = Guest { vm, vcpu, mem };
        g.write(CODE, code);
        let mut sregs = g.vcpu.get_sregs().expect("KVM_GET_SREGS");
        sregs.cs.selector = 0;
        sregs.cs.base = 0;
        g.vcpu.set_sregs(&sregs).expect("KVM_SET_SREGS");
        let regs = kvm_regs { rip: CODE, rflags: 2, rsp: 0x8000, ..Default::default() };
        g.vcpu.set_regs(&regs).expect("KVM_SET_REGS");
        g
    }

    fn write(&self, gpa: u64, bytes: &[u8]) {
        assert!(gpa as usize + bytes.len() <= MEM_SIZE);
        // SAFETY: within the guest's memory mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.mem.add(gpa as usize), bytes.len()) };
    }

    fn write_u64(&self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }
}

/// What a run ended with, flattened for comparison.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    Out(u16, Vec<u8>),
    In(u16, usize),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
    Hypercall(u64, u64),
    Hlt,
    Shutdown,
    FailEntry(u64),
    Internal,
    Intr,
    Err(i32),
    Other(String),
}

/// Runs until the next exit; IN, MMIO reads and hypercalls are answered with
/// `answer`.
fn run(g: &mut Guest, answer: u64) -> Exit {
    match g.vcpu.run() {
        Ok(VcpuExit::IoOut(port, data)) => Exit::Out(port, data.to_vec()),
        Ok(VcpuExit::IoIn(port, data)) => {
            let n = data.len();
            data.copy_from_slice(&answer.to_le_bytes()[..n]);
            Exit::In(port, n)
        }
        Ok(VcpuExit::MmioRead(addr, data)) => {
            let n = data.len();
            data.copy_from_slice(&answer.to_le_bytes()[..n]);
            Exit::MmioRead(addr, n)
        }
        Ok(VcpuExit::MmioWrite(addr, data)) => Exit::MmioWrite(addr, data.to_vec()),
        Ok(VcpuExit::Hypercall(h)) => {
            *h.ret = answer;
            Exit::Hypercall(h.nr, h.args[0])
        }
        Ok(VcpuExit::Hlt) => Exit::Hlt,
        Ok(VcpuExit::Shutdown) => Exit::Shutdown,
        Ok(VcpuExit::FailEntry(r, _)) => Exit::FailEntry(r),
        Ok(VcpuExit::InternalError) => Exit::Internal,
        Ok(VcpuExit::Intr) => Exit::Intr,
        Ok(other) => Exit::Other(format!("{other:?}")),
        Err(e) if e.errno() == libc::EINTR => Exit::Intr,
        Err(e) => Exit::Err(e.errno()),
    }
}

/// Runs until `want` bytes went out to `port`; returns them and the number
/// of exits it took.
fn collect_out(g: &mut Guest, port: u16, want: usize) -> (Vec<u8>, usize) {
    let mut got = Vec::new();
    let mut exits = 0;
    while got.len() < want && exits < 16 {
        exits += 1;
        match run(g, 0) {
            Exit::Out(p, d) if p == port => got.extend(d),
            other => {
                println!("# unexpected {other:?}");
                break;
            }
        }
    }
    (got, exits)
}

fn seg(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 32-bit protected mode (flat segments, no paging).
fn protected_mode(g: &mut Guest) {
    let mut s: kvm_sregs = g.vcpu.get_sregs().unwrap();
    s.cs = seg(8, 11, 0, 1);
    s.ds = seg(16, 3, 0, 1);
    s.es = s.ds;
    s.ss = s.ds;
    s.cr0 |= 1;
    g.vcpu.set_sregs(&s).unwrap();
}

/// Puts the vCPU in 64-bit long mode with the first GiB identity-mapped by
/// 2 MiB pages (PML4 at 0x10000, PDPT at 0x11000, PD at 0x12000).
fn long_mode(g: &mut Guest) {
    g.write_u64(0x10000, 0x11000 | 3);
    g.write_u64(0x11000, 0x12000 | 3);
    for i in 0..512u64 {
        g.write_u64(0x12000 + i * 8, (i << 21) | 0x83);
    }
    let mut s: kvm_sregs = g.vcpu.get_sregs().unwrap();
    s.cs = seg(8, 11, 1, 0);
    s.ds = seg(16, 3, 0, 1);
    s.es = s.ds;
    s.ss = s.ds;
    s.cr3 = 0x10000;
    s.cr4 = 1 << 5; // PAE
    s.efer = (1 << 8) | (1 << 10); // LME, LMA
    s.cr0 = 0x8000_0011 | (1 << 5); // PG, ET, PE, NE
    g.vcpu.set_sregs(&s).unwrap();
}

/// rvmx's count of this vCPU's VM exits (`struct rvmx_exit_info.exits`, at
/// offset 56 of page 3 of the vCPU fd; uapi/rvmx.h).
fn exit_count(g: &Guest) -> u64 {
    // SAFETY: maps one page of the vCPU fd read-only; unmapped below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, g.vcpu.as_raw_fd(), 3 * 4096) };
    assert!(p != libc::MAP_FAILED, "mmap of the exit-information page");
    // SAFETY: the page is mapped and 4096 bytes long.
    let n = unsafe { std::ptr::read_volatile((p as *const u8).add(56) as *const u64) };
    // SAFETY: unmaps what was mapped above.
    unsafe { libc::munmap(p, 4096) };
    n
}

/// Maps the top 2 MiB of the 64-bit address space (0xffff_ffff_ffe0_0000)
/// to GPA 0, next to `long_mode`'s identity map: PML4[511] -> PDPT at
/// 0x13000, PDPT[511] -> PD at 0x14000, PD[511] -> a 2 MiB page.
fn map_top_2m(g: &Guest) {
    g.write_u64(0x10000 + 511 * 8, 0x13000 | 3);
    g.write_u64(0x13000 + 511 * 8, 0x14000 | 3);
    g.write_u64(0x14000 + 511 * 8, 0x83);
}

/// Gives a long-mode guest a GDT (at 0x6000: null, 64-bit code at 8, data
/// at 16) and an IDT (at 0x5000) whose gate `vector` runs `handler`,
/// placed at 0x3000.
fn idt64(g: &mut Guest, vector: u64, handler: &[u8]) {
    g.write_u64(0x6000, 0);
    g.write_u64(0x6008, 0x00af_9a00_0000_ffff);
    g.write_u64(0x6010, 0x00cf_9200_0000_ffff);
    g.write(0x3000, handler);
    // A 64-bit interrupt gate: offset 0x3000, selector 8, present, DPL 0.
    g.write(0x5000 + vector * 16, &[0x00, 0x30, 0x08, 0x00, 0x00, 0x8e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut s: kvm_sregs = g.vcpu.get_sregs().unwrap();
    s.gdt.base = 0x6000;
    s.gdt.limit = 23;
    s.idt.base = 0x5000;
    s.idt.limit = 32 * 16 - 1;
    g.vcpu.set_sregs(&s).unwrap();
}

/// Runs KVM_RUN on `fd` by a raw system call with every XMM register
/// loaded with `pattern`, and returns the XMM registers after it: the
/// syscall must give them back unchanged, whatever the guest did to its own.
fn run_with_xmm_pattern(fd: i32, pattern: u64) -> ([u64; 32], i64) {
    let src = [pattern; 2];
    let mut out = [0u64; 32];
    let ret: i64;
    // SAFETY: a raw ioctl(KVM_RUN) system call; the XMM registers are
    // declared clobbered, `src`/`out` are valid for the loads and stores.
    unsafe {
        std::arch::asm!(
            "movdqu xmm0, [{src}]", "movdqa xmm1, xmm0", "movdqa xmm2, xmm0", "movdqa xmm3, xmm0",
            "movdqa xmm4, xmm0", "movdqa xmm5, xmm0", "movdqa xmm6, xmm0", "movdqa xmm7, xmm0",
            "movdqa xmm8, xmm0", "movdqa xmm9, xmm0", "movdqa xmm10, xmm0", "movdqa xmm11, xmm0",
            "movdqa xmm12, xmm0", "movdqa xmm13, xmm0", "movdqa xmm14, xmm0", "movdqa xmm15, xmm0",
            "syscall",
            "movdqu [{out}], xmm0", "movdqu [{out} + 16], xmm1", "movdqu [{out} + 32], xmm2",
            "movdqu [{out} + 48], xmm3", "movdqu [{out} + 64], xmm4", "movdqu [{out} + 80], xmm5",
            "movdqu [{out} + 96], xmm6", "movdqu [{out} + 112], xmm7", "movdqu [{out} + 128], xmm8",
            "movdqu [{out} + 144], xmm9", "movdqu [{out} + 160], xmm10", "movdqu [{out} + 176], xmm11",
            "movdqu [{out} + 192], xmm12", "movdqu [{out} + 208], xmm13", "movdqu [{out} + 224], xmm14",
            "movdqu [{out} + 240], xmm15",
            src = in(reg) src.as_ptr(),
            out = in(reg) out.as_mut_ptr(),
            inlateout("rax") libc::SYS_ioctl => ret,
            in("rdi") fd as i64,
            in("rsi") 0xae80u64, // KVM_RUN
            in("rdx") 0u64,
            out("rcx") _, out("r11") _,
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
        );
    }
    (out, ret)
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/dev/rvmx".into());
    let is_kvm = path.ends_with("kvm");
    let kvm = Kvm::new_with_path(CString::new(path.clone()).unwrap()).expect("open device");
    let mut t = Tap::plan(51);

    // 1. Real mode: OUT to the serial port, then HLT.
    let mut g = Guest::real(&kvm, &[
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'A',       // mov al, 'A'
        0xee,             // out dx, al
        0xf4,             // hlt
    ]);
    t.expect_eq(run(&mut g, 0), Exit::Out(0x3f8, vec![b'A']), "real mode: OUT dx, al exits with KVM_EXIT_IO");
    t.expect_eq(run(&mut g, 0), Exit::Hlt, "real mode: HLT exits with KVM_EXIT_HLT");
    let rip = g.vcpu.get_regs().unwrap().rip;
    t.expect_eq(rip, CODE + 7, "RIP is past the HLT after the HLT exit");

    // 2. IN: the data userspace gives lands in AL, and comes back out.
    let mut g = Guest::real(&kvm, &[
        0xba, 0x10, 0x00, // mov dx, 0x10
        0xec,             // in al, dx
        0xe6, 0x11,       // out 0x11, al
        0xf4,             // hlt
    ]);
    let a = run(&mut g, 0x5c);
    let b = run(&mut g, 0);
    t.expect_eq((a, b), (Exit::In(0x10, 1), Exit::Out(0x11, vec![0x5c])), "IN data from userspace reaches AL");

    // 2b. String I/O: REP OUTSB of 5 bytes (one exit, count 5), then REP
    //     INSB of 3 bytes into memory, sent back out with REP OUTSB.
    let mut g = Guest::real(&kvm, &[
        0xbe, 0x40, 0x10,   // mov si, 0x1040
        0xb9, 5, 0,         // mov cx, 5
        0xba, 0xf8, 0x03,   // mov dx, 0x3f8
        0xf3, 0x6e,         // rep outsb
        0xbf, 0x80, 0x10,   // mov di, 0x1080
        0xb9, 3, 0,         // mov cx, 3
        0xba, 0x20, 0,      // mov dx, 0x20
        0xf3, 0x6c,         // rep insb
        0xbe, 0x80, 0x10,   // mov si, 0x1080
        0xb9, 3, 0,         // mov cx, 3
        0xba, 0x21, 0,      // mov dx, 0x21
        0xf3, 0x6e,         // rep outsb
        0xf4,
    ]);
    g.write(0x1040, b"hello");
    // rvmx moves up to a page of elements per exit; KVM's emulator may use
    // several exits. Either way the bytes must arrive in order.
    let (out, exits) = collect_out(&mut g, 0x3f8, 5);
    t.check(out == b"hello" && (is_kvm || exits == 1), "REP OUTSB: the 5 bytes, in one KVM_EXIT_IO on rvmx (count 5)", format!("{out:?} in {exits} exits"));
    let mut fed = 0;
    while fed < 3 {
        // The bytes of "abc" not yet given, as `run` answers an IN.
        let mut answer = [0u8; 8];
        answer[..3 - fed].copy_from_slice(&b"abc"[fed..]);
        match run(&mut g, u64::from_le_bytes(answer)) {
            Exit::In(0x20, n) => fed += n,
            other => { println!("# unexpected {other:?}"); break; }
        }
    }
    let (back, _) = collect_out(&mut g, 0x21, 3);
    t.check(back == b"abc", "REP INSB stores userspace's data in guest memory", format!("{back:?}"));

    // 3. CPUID leaf 1 in the guest: ECX goes out through port 0x12.
    let mut g = Guest::real(&kvm, &[
        0x66, 0xb8, 0x01, 0, 0, 0, // mov eax, 1
        0x0f, 0xa2,                 // cpuid
        0x66, 0x89, 0xc8,           // mov eax, ecx
        0xe7, 0x12,                 // out 0x12, ax (16-bit operand in real mode)
        0x66, 0xe7, 0x12,           // out 0x12, eax
        0xf4,
    ]);
    let _ = run(&mut g, 0);
    let ecx = match run(&mut g, 0) {
        Exit::Out(0x12, d) if d.len() == 4 => u32::from_le_bytes([d[0], d[1], d[2], d[3]]),
        other => { t.check(false, "CPUID", format!("{other:?}")); 0 }
    };
    t.check(ecx & (1 << 5) == 0 && ecx & (1 << 31) != 0, "CPUID.1: VMX hidden, hypervisor bit set", format!("ecx={ecx:#x}"));

    // 4. MMIO outside RAM: a byte write, a 16-bit write, and a read into AL.
    let mut g = Guest::real(&kvm, &[
        0xb8, 0x00, 0x30,       // mov ax, 0x3000
        0x8e, 0xd8,             // mov ds, ax       (DS base 0x30000)
        0xbb, 0x20, 0x00,       // mov bx, 0x20
        0xc6, 0x06, 0x10, 0x00, 0x5a, // mov byte [0x10], 0x5a
        0xb8, 0x34, 0x12,       // mov ax, 0x1234
        0x89, 0x07,             // mov [bx], ax
        0x8a, 0x07,             // mov al, [bx]
        0xe6, 0x13,             // out 0x13, al
        0xf4,
    ]);
    // The RAM slot ends at 2 MiB; put the "device" at 16 MiB instead.
    let mut s = g.vcpu.get_sregs().unwrap();
    s.ds.base = 0x100_0000;
    g.vcpu.set_sregs(&s).unwrap();
    g.write(CODE, &[0x90, 0x90, 0x90, 0x90, 0x90]); // keep DS as set: nop the mov ds
    let w1 = run(&mut g, 0);
    let w2 = run(&mut g, 0);
    let r = run(&mut g, 0x77);
    let o = run(&mut g, 0);
    t.expect_eq(w1, Exit::MmioWrite(0x100_0010, vec![0x5a]), "MMIO: byte store becomes KVM_EXIT_MMIO write");
    t.expect_eq(w2, Exit::MmioWrite(0x100_0020, vec![0x34, 0x12]), "MMIO: 16-bit store [bx], ax");
    t.expect_eq((r, o), (Exit::MmioRead(0x100_0020, 1), Exit::Out(0x13, vec![0x77])), "MMIO: load into AL gets userspace's data");

    // 4b. MOV EAX, [moffs32] and MOV [moffs32], AL in protected mode.
    let mut g = Guest::real(&kvm, &[
        0xa1, 0x00, 0x00, 0x00, 0xd0, // mov eax, [0xd0000000]
        0xa2, 0x04, 0x00, 0x00, 0xd0, // mov [0xd0000004], al
        0xf4,
    ]);
    protected_mode(&mut g);
    let r = run(&mut g, 0x1234_5678);
    let w = run(&mut g, 0);
    t.expect_eq((r, w), (Exit::MmioRead(0xd000_0000, 4), Exit::MmioWrite(0xd000_0004, vec![0x78])), "MMIO: MOV EAX, moffs and MOV moffs, AL");

    // 4c. A read-only slot (ROM) at 2 MiB: reads come from memory, writes
    //     become MMIO; after the slot is deleted, reads become MMIO too (the
    //     EPT mapping and every CPU's cached translation are gone).
    let mut g = Guest::real(&kvm, &[
        0xa0, 0x00, 0x00,       // mov al, [0]       (DS.base = 2 MiB)
        0xe6, 0x30,             // out 0x30, al
        0xc6, 0x06, 0x00, 0x00, 0x55, // mov byte [0], 0x55
        0xa0, 0x00, 0x00,       // mov al, [0]
        0xe6, 0x31,             // out 0x31, al
        0xf4,
    ]);
    // SAFETY: a fresh anonymous page for the ROM (leaked at exit).
    let rom = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE,
                   libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    // SAFETY: `rom` is a 4096-byte writable mapping.
    unsafe { rom.write(0x42) };
    let rom_region = |size: u64| kvm_userspace_memory_region {
        slot: 1,
        flags: kvm_bindings::KVM_MEM_READONLY,
        guest_phys_addr: 0x20_0000,
        memory_size: size,
        userspace_addr: rom as u64,
    };
    // SAFETY: `rom` lives as long as the process.
    unsafe { g.vm.set_user_memory_region(rom_region(4096)).unwrap() };
    let mut s = g.vcpu.get_sregs().unwrap();
    s.ds.base = 0x20_0000;
    g.vcpu.set_sregs(&s).unwrap();
    let a = run(&mut g, 0);
    let b = run(&mut g, 0);
    t.expect_eq((a, b), (Exit::Out(0x30, vec![0x42]), Exit::MmioWrite(0x20_0000, vec![0x55])), "read-only slot: reads are memory, writes are KVM_EXIT_MMIO");
    // SAFETY: deletes the slot (size 0).
    unsafe { g.vm.set_user_memory_region(rom_region(0)).unwrap() };
    let c = run(&mut g, 0x99);
    let d = run(&mut g, 0);
    t.expect_eq((c, d), (Exit::MmioRead(0x20_0000, 1), Exit::Out(0x31, vec![0x99])), "deleted slot: the guest's next read is KVM_EXIT_MMIO");

    // 5. VMCALL: rvmx exits to userspace; KVM answers it in the kernel.
    let mut g = Guest::real(&kvm, &[
        0xb8, 42, 0,            // mov ax, 42
        0xbb, 7, 0,             // mov bx, 7
        0x0f, 0x01, 0xc1,       // vmcall
        0xe6, 0x14,             // out 0x14, al
        0xf4,
    ]);
    let e = run(&mut g, 99);
    if is_kvm {
        // KVM: unknown hypercall -> RAX = -KVM_ENOSYS (-1000), no exit.
        t.expect_eq(e, Exit::Out(0x14, vec![(-1000i64 as u64 & 0xff) as u8]), "VMCALL (KVM answers in the kernel)");
    } else {
        let o = run(&mut g, 0);
        t.expect_eq((e, o), (Exit::Hypercall(42, 7), Exit::Out(0x14, vec![99])), "VMCALL: KVM_EXIT_HYPERCALL, ret to RAX");
    }

    // 6. A VMX instruction in the guest raises #UD, handled by the guest's
    //    own real-mode IVT (vector 6 -> 0000:0500).
    let mut g = Guest::real(&kvm, &[0x0f, 0x01, 0xc4, 0xf4]); // vmxoff; hlt
    g.write(6 * 4, &[0x00, 0x05, 0x00, 0x00]);
    g.write(0x500, &[0xe6, 0x15, 0xf4]); // out 0x15, al; hlt
    t.expect_eq(run(&mut g, 0), Exit::Out(0x15, vec![0]), "VMXOFF in the guest: #UD to the guest's handler");

    // 7. Triple fault: an exception with an empty IDT.
    let mut g = Guest::real(&kvm, &[0xcc]); // int3
    let mut s = g.vcpu.get_sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    t.expect_eq(run(&mut g, 0), Exit::Shutdown, "triple fault: KVM_EXIT_SHUTDOWN");

    // 8. 32-bit protected mode.
    let mut g = Guest::real(&kvm, &[0xb8, 0xef, 0xbe, 0xad, 0xde, 0xe7, 0x18, 0xf4]); // mov eax, 0xdeadbeef; out 0x18, eax; hlt
    protected_mode(&mut g);
    t.expect_eq(run(&mut g, 0), Exit::Out(0x18, vec![0xef, 0xbe, 0xad, 0xde]), "32-bit protected mode: OUT of EAX");

    // 8b. 32-bit PAE paging. The PDPT at 0x20000 has two present entries:
    //     the first GiB and the second both map GPA 0 with one 2 MiB page, so
    //     virtual 0x40005000 is guest-physical 0x5000, which holds a magic.
    //     First set up by KVM_SET_SREGS, then turned on by the guest itself
    //     with a MOV to CR0 that also clears CD/NW (which exits to rvmx, so
    //     rvmx must load the PDPTEs; without the CD/NW change the CPU would).
    //     The second 2 MiB of each GiB map GPA 0x200000, beyond the guest's
    //     RAM: a store there is MMIO, which rvmx must decode by reading the
    //     instruction through the guest's PAE page tables.
    let pae_tables = |g: &Guest| {
        g.write_u64(0x20000, 0x21000 | 1);
        g.write_u64(0x20008, 0x21000 | 1);
        g.write_u64(0x21000, 0x83); // 2 MiB page at 0: present, writable, PS
        g.write_u64(0x21008, 0x20_0000 | 0x83); // and one at 2 MiB
        g.write(0x5000, &0x5041_4521u32.to_le_bytes());
    };
    let read_magic = [
        0xa1, 0x00, 0x50, 0x00, 0x40, // mov eax, [0x40005000]
        0xe7, 0x19, // out 0x19, eax
        0xc6, 0x05, 0x10, 0x00, 0x20, 0x40, 0x77, // mov byte [0x40200010], 0x77
        0xf4, // hlt
    ];
    let mut g = Guest::real(&kvm, &read_magic);
    pae_tables(&g);
    protected_mode(&mut g);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr3 = 0x20000;
    s.cr4 |= 1 << 5; // PAE
    s.cr0 |= 1 << 31; // PG
    let set = g.vcpu.set_sregs(&s).map_err(|e| e.errno());
    let out = run(&mut g, 0);
    t.expect_eq((set, out), (Ok(()), Exit::Out(0x19, 0x5041_4521u32.to_le_bytes().to_vec())), "32-bit PAE paging set by KVM_SET_SREGS");
    t.expect_eq(run(&mut g, 0), Exit::MmioWrite(0x20_0010, vec![0x77]), "32-bit PAE paging: MMIO store through a PAE mapping, decoded");
    let mut code = vec![
        0x0f, 0x20, 0xc0, // mov eax, cr0
        0x0d, 0x00, 0x00, 0x00, 0x80, // or eax, 0x80000000 (PG)
        0x25, 0xff, 0xff, 0xff, 0x9f, // and eax, 0x9fffffff (CD, NW off)
        0x0f, 0x22, 0xc0, // mov cr0, eax
    ];
    code.extend_from_slice(&read_magic);
    let mut g = Guest::real(&kvm, &code);
    pae_tables(&g);
    protected_mode(&mut g);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr3 = 0x20000;
    s.cr4 |= 1 << 5; // PAE, paging still off
    g.vcpu.set_sregs(&s).unwrap();
    t.expect_eq(run(&mut g, 0), Exit::Out(0x19, 0x5041_4521u32.to_le_bytes().to_vec()), "32-bit PAE paging turned on by the guest (MOV to CR0 that exits)");

    // 9-10. 64-bit long mode: a 64-bit MMIO store through the guest's own
    //       page tables, and a 32-bit OUT.
    let mut g = Guest::real(&kvm, &[
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
        0xbb, 0x00, 0x00, 0x00, 0x30,                               // mov ebx, 0x30000000
        0x48, 0x89, 0x03,                                           // mov [rbx], rax
        0xe7, 0x19,                                                 // out 0x19, eax
        0xf4,
    ]);
    long_mode(&mut g);
    t.expect_eq(run(&mut g, 0), Exit::MmioWrite(0x3000_0000, 0x1122334455667788u64.to_le_bytes().to_vec()), "long mode: 64-bit MMIO store (REX.W)");
    t.expect_eq(run(&mut g, 0), Exit::Out(0x19, vec![0x88, 0x77, 0x66, 0x55]), "long mode: OUT of EAX");

    // 11. A signal stops a guest spinning in `jmp $`.
    // The guest spins with interrupts enabled (STI): Bochs 2.7 takes an
    // external-interrupt VM exit only when the guest's RFLAGS.IF is 1 (the
    // SDM says: whatever IF is), under KVM as well; with IF=0 the host's
    // timer and the signal's IPI would not reach the host until some NMI.
    let mut g = Guest::real(&kvm, &[0xfb, 0xeb, 0xfe]); // sti; jmp $
    install_empty_handler(libc::SIGALRM);
    let timer = libc::itimerval {
        it_interval: libc::timeval { tv_sec: 0, tv_usec: 0 },
        it_value: libc::timeval { tv_sec: 0, tv_usec: 100_000 },
    };
    // SAFETY: a plain libc call with a valid timer value.
    unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) };
    t.expect_eq(run(&mut g, 0), Exit::Intr, "SIGALRM stops a spinning guest: KVM_RUN fails with EINTR");

    // 12. immediate_exit: KVM_RUN returns EINTR at once.
    g.vcpu.set_kvm_immediate_exit(1);
    t.expect_eq(run(&mut g, 0), Exit::Intr, "kvm_run.immediate_exit: KVM_RUN returns EINTR");
    g.vcpu.set_kvm_immediate_exit(0);

    // 13. The guest fills its vector registers; the launcher's survive.
    let g = Guest::real(&kvm, &[
        0x66, 0x0f, 0x74, 0xc0, 0x66, 0x0f, 0x74, 0xc9, // pcmpeqb xmm0,xmm0; xmm1
        0x66, 0x0f, 0x74, 0xd2, 0x66, 0x0f, 0x74, 0xdb, // xmm2; xmm3
        0x66, 0x0f, 0x74, 0xe4, 0x66, 0x0f, 0x74, 0xed, // xmm4; xmm5
        0x66, 0x0f, 0x74, 0xf6, 0x66, 0x0f, 0x74, 0xff, // xmm6; xmm7
        0xe6, 0x16, 0xf4,                               // out 0x16, al; hlt
    ]);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.cr4 |= 1 << 9; // OSFXSR: SSE allowed
    g.vcpu.set_sregs(&s).unwrap();
    let (xmm, ret) = run_with_xmm_pattern(g.vcpu.as_raw_fd(), 0x0123_4567_89ab_cdef);
    t.check(ret == 0 && xmm.iter().all(|&x| x == 0x0123_4567_89ab_cdef), "guest clobbers XMM0-7: the launcher's XMM0-15 are unchanged", format!("ret={ret} xmm={xmm:x?}"));

    // 14. No memory at all: the first fetch cannot be served.
    let vm = kvm.create_vm().unwrap();
    let mut vcpu = vm.create_vcpu(0).unwrap();
    let e = match vcpu.run() {
        Ok(VcpuExit::InternalError) => Exit::Internal,
        Ok(other) => Exit::Other(format!("{other:?}")),
        Err(e) => Exit::Err(e.errno()),
    };
    t.check(matches!(e, Exit::Internal | Exit::Err(libc::EFAULT)), "KVM_RUN with no memory: internal error, not a crash", format!("{e:?}"));

    // 15. Invalid guest state: TR must be a TSS (type 3 or 11); type 0
    //     fails the VM entry's guest-state checks (or SET_SREGS).
    let mut g = Guest::real(&kvm, &[0xf4]);
    protected_mode(&mut g);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.tr.type_ = 0;
    let refused = g.vcpu.set_sregs(&s).is_err();
    let e = if refused { Exit::Err(libc::EINVAL) } else { run(&mut g, 0) };
    t.check(refused || matches!(e, Exit::FailEntry(_) | Exit::Internal), "SET_SREGS with TR not a TSS: refused or KVM_EXIT_FAIL_ENTRY", format!("{e:?}"));
    if let Exit::FailEntry(r) = e {
        println!("# hardware_entry_failure_reason = {r:#x}");
    }

    // 17-20. Hostile addresses (issue 9). Each crashed or misled rvmx
    //     before; each behaves here as on KVM.
    // 17. REP OUTSB of the last 16 bytes below 2^64 (PML4[511] -> PDPT[511]
    //     -> a 2 MiB page at GPA 0): the source address must not overflow.
    let top = [
        0x48, 0xbe, 0xf0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // mov rsi, 0xffff_ffff_ffff_fff0
        0xb9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 16
        0x66, 0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xf3, 0x6e,                   // rep outsb
        0xf4,                         // hlt
    ];
    let mut g = Guest::real(&kvm, &top);
    long_mode(&mut g);
    map_top_2m(&g);
    g.write(0x1f_fff0, b"0123456789abcdef");
    let (bytes, _) = collect_out(&mut g, 0x3f8, 16);
    let end = run(&mut g, 0);
    t.expect_eq((bytes, end), (b"0123456789abcdef".to_vec(), Exit::Hlt), "REP OUTSB of the 16 bytes below 2^64");

    // 18. An MMIO store by an instruction at RIP 0xffff_ffff_ffff_fff8:
    //     decoding reads the bytes from the top of the address space.
    let mut g = Guest::real(&kvm, &[
        0x48, 0xb8, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // mov rax, 0xffff_ffff_ffff_fff8
        0xbb, 0x00, 0x00, 0x30, 0x00, // mov ebx, 0x300000 (not RAM: MMIO)
        0xff, 0xe0,                   // jmp rax
    ]);
    long_mode(&mut g);
    map_top_2m(&g);
    g.write(0x1f_fff8, &[0x89, 0x03, 0xf4]); // mov [rbx], eax; hlt
    let a = run(&mut g, 0);
    let b = run(&mut g, 0);
    t.expect_eq((a, b), (Exit::MmioWrite(0x30_0000, vec![0xf8, 0xff, 0xff, 0xff]), Exit::Hlt), "MMIO store by an instruction just below 2^64");

    // 19. REP OUTSB from a linear address the guest's page tables do not
    //     map: the guest takes #PF (CR2 = the address, error code 0), as on
    //     the CPU; its handler reports both.
    let mut g = Guest::real(&kvm, &[
        0xbe, 0x00, 0x00, 0x00, 0x80, // mov esi, 0x8000_0000 (PDPT[2]: not present)
        0xb9, 0x01, 0x00, 0x00, 0x00, // mov ecx, 1
        0x66, 0xba, 0xf8, 0x03,       // mov dx, 0x3f8
        0xf3, 0x6e,                   // rep outsb
        0xf4,                         // hlt
    ]);
    long_mode(&mut g);
    idt64(&mut g, 14, &[
        0x5b,                   // pop rbx (error code)
        0x0f, 0x20, 0xd0,       // mov rax, cr2
        0x66, 0xba, 0x10, 0x00, // mov dx, 0x10
        0xef,                   // out dx, eax
        0x89, 0xd8,             // mov eax, ebx
        0xef,                   // out dx, eax
        0xf4,                   // hlt
    ]);
    let got = (run(&mut g, 0), run(&mut g, 0), run(&mut g, 0));
    t.expect_eq(got, (Exit::Out(0x10, vec![0, 0, 0, 0x80]), Exit::Out(0x10, vec![0; 4]), Exit::Hlt), "OUTSB from an unmapped page: #PF with CR2 and error code");

    // 20. A 32-bit guest turns paging on by itself (CR0.PG is the guest's:
    //     no exit) and runs code at linear 0x5000, which it maps to GPA
    //     0x6000; an MMIO store there must be decoded from GPA 0x6000, and
    //     KVM_GET_SREGS must show CR0.PG.
    let mut g = Guest::real(&kvm, &[
        0xb8, 0x00, 0x00, 0x02, 0x00, // mov eax, 0x20000 (page directory)
        0x0f, 0x22, 0xd8,             // mov cr3, eax
        0x0f, 0x20, 0xc0,             // mov eax, cr0
        0x0d, 0x00, 0x00, 0x00, 0x80, // or eax, 0x8000_0000
        0x0f, 0x22, 0xc0,             // mov cr0, eax
        0xb9, 0x00, 0x50, 0x00, 0x00, // mov ecx, 0x5000
        0xff, 0xe1,                   // jmp ecx
    ]);
    protected_mode(&mut g);
    g.write(0x20000, &(0x21000u32 | 3).to_le_bytes());
    for i in 0..1024u32 {
        let page = if i == 5 { 0x6000 } else { i << 12 };
        g.write(0x21000 + u64::from(i) * 4, &(page | 3).to_le_bytes());
    }
    g.write(0x5000, &[0xff; 16]); // what linear 0x5000 would be without paging
    g.write(0x6000, &[0xa3, 0x00, 0x00, 0x30, 0x00, 0xf4]); // mov [0x300000], eax; hlt
    let a = run(&mut g, 0);
    let b = run(&mut g, 0);
    let stored = matches!(&a, Exit::MmioWrite(0x30_0000, d) if d.len() == 4);
    t.check(stored && b == Exit::Hlt, "MMIO store decoded through the page tables the guest turned on itself", format!("{a:?} {b:?}"));
    let cr0 = g.vcpu.get_sregs().unwrap().cr0;
    t.check(cr0 & 0x8000_0001 == 0x8000_0001, "KVM_GET_SREGS shows the CR0.PG the guest set", format!("cr0={cr0:#x}"));

    // 21. WBINVD would flush the host's caches: it must exit (and be
    //     skipped). rvmx's exit-information page (page 3 of the vCPU fd)
    //     counts the exits; KVM has no such page (it exits on WBINVD too).
    let mut g = Guest::real(&kvm, &[
        0xb9, 0xe8, 0x03, // mov cx, 1000
        0x0f, 0x09,       // wbinvd
        0xe2, 0xfc,       // loop (back to wbinvd)
        0xf4,             // hlt
    ]);
    if is_kvm {
        t.check(run(&mut g, 0) == Exit::Hlt, "1000 WBINVD run to the HLT (the exit count is rvmx's own page)", "");
    } else {
        let exits_before = exit_count(&g);
        let end = run(&mut g, 0);
        let n = exit_count(&g) - exits_before;
        t.check(end == Exit::Hlt && n >= 1000, "1000 WBINVD: each one exits, none flushes the host", format!("{end:?}, {n} exits"));
    }

    // 22. Debug registers: MOV to and from DR0, DR7 and DR6 in 64-bit mode
    //     (exits on rvmx, which keeps them away from the host's).
    let mut g = Guest::real(&kvm, &[
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
        0x0f, 0x23, 0xc0,             // mov dr0, rax
        0x0f, 0x21, 0xc3,             // mov rbx, dr0
        0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1 (L0)
        0x0f, 0x23, 0xf8,             // mov dr7, rax
        0x0f, 0x21, 0xf9,             // mov rcx, dr7
        0x0f, 0x21, 0xf2,             // mov rdx, dr6
        0xf4,                         // hlt
    ]);
    long_mode(&mut g);
    let end = run(&mut g, 0);
    let r = g.vcpu.get_regs().unwrap();
    t.expect_eq((end, r.rbx, r.rcx, r.rdx), (Exit::Hlt, 0x1122_3344_5566_7788, 0x401, 0xffff_0ff0), "MOV to/from DR0, DR7, DR6: the guest's own values");

    // 22b. The guest's own hardware breakpoint fires in the guest: a write
    //      watchpoint on 0x2000 (DR0, DR7 = L0, write, 4 bytes), then a
    //      store there: #DB to the guest's handler, which reads DR6 (B0 set)
    //      and sends it out.
    let mut g = Guest::real(&kvm, &[
        0x48, 0xb8, 0x00, 0x20, 0, 0, 0, 0, 0, 0, // mov rax, 0x2000
        0x0f, 0x23, 0xc0,                         // mov dr0, rax
        0x48, 0xb8, 0x01, 0x00, 0x0d, 0, 0, 0, 0, 0, // mov rax, 0xd0001 (L0, RW0 = write, LEN0 = 4)
        0x0f, 0x23, 0xf8,                         // mov dr7, rax
        0xc7, 0x04, 0x25, 0x00, 0x20, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [0x2000], 1
        0xf4,                                     // hlt (not reached first)
    ]);
    long_mode(&mut g);
    idt64(&mut g, 1, &[0x0f, 0x21, 0xf0, 0xe7, 0x1d, 0xf4]); // #DB: mov rax, dr6; out 0x1d, eax; hlt
    let end = run(&mut g, 0);
    let fired = matches!(&end, Exit::Out(0x1d, d) if d.len() == 4 && d[0] & 0x0f == 0x01);
    t.check(fired, "a hardware watchpoint the guest sets fires in the guest (#DB, DR6.B0)", format!("{end:?}"));

    // 22c. Accesses that cross from RAM into MMIO and back (64-bit mode,
    //      RAM below 2 MiB, MMIO from 2 MiB, and a second RAM slot at
    //      0x201000): the RAM bytes stay in RAM, only the device's bytes go
    //      out, at the device's address, as KVM's emulator splits them.
    let mut g = Guest::real(&kvm, &[
        0xc7, 0x04, 0x25, 0xfe, 0xff, 0x1f, 0x00, 0x11, 0x22, 0x33, 0x44, // mov dword [0x1ffffe], 0x44332211
        0x8b, 0x04, 0x25, 0xfe, 0xff, 0x1f, 0x00,                         // mov eax, [0x1ffffe]
        0xe7, 0x1e,                                                       // out 0x1e, eax
        0xc7, 0x04, 0x25, 0xfe, 0x0f, 0x20, 0x00, 0x55, 0x66, 0x77, 0x88, // mov dword [0x200ffe], 0x88776655
        0xc7, 0x04, 0x25, 0xfe, 0x2f, 0x20, 0x00, 0xaa, 0xbb, 0xcc, 0xdd, // mov dword [0x202ffe], 0xddccbbaa
        0x8b, 0x04, 0x25, 0xfe, 0x2f, 0x20, 0x00,                         // mov eax, [0x202ffe]
        0xe7, 0x1e,                                                       // out 0x1e, eax
        0xf4,                                                             // hlt
    ]);
    long_mode(&mut g);
    // SAFETY: a fresh anonymous page for the second slot, leaked (the
    // process is short-lived).
    let page2 = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    } as *mut u8;
    let slot2 = kvm_userspace_memory_region { slot: 1, flags: 0, guest_phys_addr: 0x20_1000, memory_size: 4096, userspace_addr: page2 as u64 };
    // SAFETY: the page outlives the VM.
    unsafe { g.vm.set_user_memory_region(slot2).expect("KVM_SET_USER_MEMORY_REGION") };
    let w = run(&mut g, 0);
    // SAFETY: within the 2 MiB slot's mapping.
    let ram_lo = unsafe { [*g.mem.add(0x1f_fffe), *g.mem.add(0x1f_ffff)] };
    t.check(w == Exit::MmioWrite(0x20_0000, vec![0x33, 0x44]) && ram_lo == [0x11, 0x22],
        "a store from RAM into MMIO: the low bytes to RAM, the high ones to the device at its address", format!("{w:?}, RAM {ram_lo:02x?}"));
    let r = run(&mut g, 0x6655);
    let out = run(&mut g, 0);
    t.check(r == Exit::MmioRead(0x20_0000, 2) && out == Exit::Out(0x1e, vec![0x11, 0x22, 0x55, 0x66]),
        "a load from RAM into MMIO: RAM's bytes and the device's, in order", format!("{r:?}, then {out:?}"));
    let w2 = run(&mut g, 0);
    // SAFETY: the second slot's page.
    let ram_hi = unsafe { [*page2, *page2.add(1)] };
    t.check(w2 == Exit::MmioWrite(0x20_0ffe, vec![0x55, 0x66]) && ram_hi == [0x77, 0x88],
        "a store from MMIO into RAM: the device gets its two bytes, RAM the rest", format!("{w2:?}, RAM {ram_hi:02x?}"));
    // Across two device pages: two exits, one per page.
    let f1 = run(&mut g, 0);
    let f2 = run(&mut g, 0);
    t.check(f1 == Exit::MmioWrite(0x20_2ffe, vec![0xaa, 0xbb]) && f2 == Exit::MmioWrite(0x20_3000, vec![0xcc, 0xdd]),
        "a store across two MMIO pages: two exits, each at its page", format!("{f1:?}, then {f2:?}"));
    let r1 = run(&mut g, 0x2211);
    let r2 = run(&mut g, 0x4433);
    let out2 = run(&mut g, 0);
    t.check(r1 == Exit::MmioRead(0x20_2ffe, 2) && r2 == Exit::MmioRead(0x20_3000, 2) && out2 == Exit::Out(0x1e, vec![0x11, 0x22, 0x33, 0x44]) && run(&mut g, 0) == Exit::Hlt,
        "a load across two MMIO pages: two exits, the value put together", format!("{r1:?}, {r2:?}, then {out2:?}"));

    // 22d. 64-bit code turning paging off in a MOV to CR0 that rvmx
    //      emulates (it also sets CR0.CD, a bit the host owns): #GP, as on
    //      the CPU (no IDT: a triple fault), not a guest state that VM
    //      entry refuses.
    let mut g = Guest::real(&kvm, &[
        0x0f, 0x20, 0xc0,                   // mov rax, cr0
        0x25, 0xff, 0xff, 0xff, 0x7f,       // and eax, 0x7fffffff (PG off)
        0x0d, 0x00, 0x00, 0x00, 0x40,       // or eax, 0x40000000 (CD on)
        0x0f, 0x22, 0xc0,                   // mov cr0, rax
        0xf4,                               // hlt
    ]);
    long_mode(&mut g);
    let mut s = g.vcpu.get_sregs().unwrap();
    s.idt.limit = 0;
    g.vcpu.set_sregs(&s).unwrap();
    let end = run(&mut g, 0);
    t.expect_eq(end, Exit::Shutdown, "64-bit code clearing CR0.PG (with CD set, so rvmx emulates it): #GP");

    // 23. The launcher's own LDT (modify_ldt) survives KVM_RUN: a VM exit
    //     leaves LDTR null, and nothing reloads it before the return to
    //     user mode unless the hypervisor does. Loading a selector of that
    //     LDT right after KVM_RUN would then fault (this program would die
    //     of SIGSEGV here).
    #[repr(C)]
    struct UserDesc {
        entry_number: u32,
        base_addr: u32,
        limit: u32,
        flags: u32,
    }
    // A flat 32-bit data segment, limit in pages, usable.
    let desc = UserDesc { entry_number: 0, base_addr: 0, limit: 0xfffff, flags: 1 | (1 << 4) | (1 << 6) };
    // SAFETY: modify_ldt(1, desc, size) writes one LDT entry of this process.
    let r = unsafe { libc::syscall(libc::SYS_modify_ldt, 1, &desc as *const UserDesc, std::mem::size_of::<UserDesc>()) };
    let mut g = Guest::real(&kvm, &[0xe6, 0x1b, 0xf4]); // out 0x1b, al; hlt
    let e = run(&mut g, 0);
    if r == 0 {
        println!("# loading LDT selector 7 into ES after KVM_RUN (SIGSEGV here: the LDT was lost)");
        // SAFETY: loads ES with LDT entry 0 (RPL 3), then back with the
        // null selector; ES is not used for addressing in 64-bit mode.
        unsafe { std::arch::asm!("mov es, {0:x}", "mov es, {1:x}", in(reg) 7u16, in(reg) 0u16) };
    }
    t.check(r == 0 && matches!(e, Exit::Out(0x1b, _)), "the launcher's LDT survives KVM_RUN", format!("modify_ldt={r} {e:?}"));

    // 15b. Segment limits of string I/O, outside 64-bit mode: a 32-bit guest
    //     whose DS ends at 0x0fff (no IDT: a fault is a triple fault). OUTSB
    //     from DS:0x1000 faults (#GP) before any byte goes out; REP OUTSB of
    //     32 bytes from DS:0x0ff0 sends the 16 below the limit, then faults.
    for (name, esi, ecx, want) in [("OUTSB beyond DS's limit: #GP, nothing sent", 0x1000u32, 1u32, 0usize),
                                   ("REP OUTSB across DS's limit: the bytes below it, then #GP", 0x0ff0, 32, 16)] {
        let mut code = vec![0xbe];
        code.extend_from_slice(&esi.to_le_bytes()); // mov esi, imm32
        code.push(0xb9);
        code.extend_from_slice(&ecx.to_le_bytes()); // mov ecx, imm32
        code.extend_from_slice(&[0x66, 0xba, 0x1c, 0x00, 0xf3, 0x6e, 0xf4]); // mov dx, 0x1c; rep outsb; hlt
        let mut g = Guest::real(&kvm, &code);
        protected_mode(&mut g);
        let mut s = g.vcpu.get_sregs().unwrap();
        s.ds.limit = 0x0fff;
        s.ds.g = 0;
        s.idt.limit = 0;
        g.vcpu.set_sregs(&s).unwrap();
        let mut sent = 0;
        let end = loop {
            match run(&mut g, 0) {
                Exit::Out(0x1c, d) => sent += d.len(),
                other => break other,
            }
        };
        t.check(sent == want && end == Exit::Shutdown, name, format!("{sent} bytes sent, then {end:?}"));
    }

    // 24. CPUID faulting (KVM offers it to every guest; Linux uses it for
    //     arch_prctl(ARCH_SET_CPUID, 0)): PLATFORM_INFO bit 31 offers it,
    //     the guest turns it on with MISC_FEATURES_ENABLES bit 0, and then
    //     CPUID in ring 0 still runs while CPUID in ring 3 is #GP.
    let mut g = Guest::real(&kvm, &[
        0xb9, 0xce, 0x00, 0x00, 0x00,   // mov ecx, 0xce (PLATFORM_INFO)
        0x0f, 0x32,                     // rdmsr
        0xe7, 0x1d,                     // out 0x1d, eax
        0xb9, 0x40, 0x01, 0x00, 0x00,   // mov ecx, 0x140 (MISC_FEATURES_ENABLES)
        0xb8, 0x01, 0x00, 0x00, 0x00,   // mov eax, 1
        0x31, 0xd2,                     // xor edx, edx
        0x0f, 0x30,                     // wrmsr
        0x0f, 0xa2,                     // cpuid (in ring 0)
        0xe6, 0x1e,                     // out 0x1e, al
        0xf4,                           // hlt
    ]);
    long_mode(&mut g);
    let info = run(&mut g, 0);
    let ring0 = (run(&mut g, 0), run(&mut g, 0));
    let offered = matches!(&info, Exit::Out(0x1d, d) if d.len() == 4 && d[3] & 0x80 != 0);
    t.check(offered && matches!(ring0, (Exit::Out(0x1e, _), Exit::Hlt)),
            "CPUID faulting: offered in PLATFORM_INFO, turned on by the guest, CPUID in ring 0 still runs",
            format!("{info:?}, then {ring0:?}"));
    let get_misc = |g: &Guest| {
        let mut m = Msrs::from_entries(&[kvm_msr_entry { index: 0x140, ..Default::default() }]).unwrap();
        g.vcpu.get_msrs(&mut m).ok().map(|n| (n, m.as_slice()[0].data))
    };
    let set = |g: &Guest, index: u32, data: u64| {
        let m = Msrs::from_entries(&[kvm_msr_entry { index, data, ..Default::default() }]).unwrap();
        g.vcpu.set_msrs(&m).unwrap_or(0)
    };
    t.check(get_misc(&g) == Some((1, 1)) && set(&g, 0xce, 0) == 0,
            "CPUID faulting: KVM_GET_MSRS shows it on; the VMM may not take it from PLATFORM_INFO while it is on",
            format!("MISC_FEATURES_ENABLES {:?}", get_misc(&g)));
    // Ring 3 (CS and SS with DPL and RPL 3, IOPL 3 so that OUT is allowed,
    // user pages): OUT, CPUID, OUT. No IDT, so #GP is a triple fault; HLT
    // in ring 3 is #GP too, so a CPUID that runs gives the second OUT, then
    // the shutdown. (A fresh guest for each run: none runs after a
    // shutdown.)
    const USER_CODE: [u8; 7] = [
        0xe6, 0x1f,                     // out 0x1f, al
        0x0f, 0xa2,                     // cpuid
        0xe6, 0x1e,                     // out 0x1e, al
        0xf4,                           // hlt (#GP in ring 3)
    ];
    let ring3 = |g: &mut Guest, rip: u64| {
        for level in [0x10000u64, 0x11000] {
            g.write_u64(level, (level + 0x1000) | 7);
        }
        for i in 0..512u64 {
            g.write_u64(0x12000 + i * 8, (i << 21) | 0x87);
        }
        let mut s: kvm_sregs = g.vcpu.get_sregs().unwrap();
        s.cs = kvm_segment { selector: 0x1b, dpl: 3, ..seg(8, 11, 1, 0) };
        s.ss = kvm_segment { selector: 0x23, dpl: 3, ..seg(16, 3, 0, 1) };
        s.idt.limit = 0;
        g.vcpu.set_sregs(&s).unwrap();
        let mut r = g.vcpu.get_regs().unwrap();
        r.rip = rip;
        r.rax = 0;
        r.rflags = 0x3002; // IOPL 3
        g.vcpu.set_regs(&r).unwrap();
        let mut exits = Vec::new();
        while exits.len() < 4 {
            let e = run(g, 0);
            let last = !matches!(e, Exit::Out(..));
            exits.push(e);
            if last {
                break;
            }
        }
        exits
    };
    // The same guest, faulting turned off again by the VMM.
    g.write(0x1100, &USER_CODE);
    let off = (set(&g, 0x140, 0), ring3(&mut g, 0x1100));
    t.check(matches!(&off, (1, v) if matches!(v.as_slice(), [Exit::Out(0x1f, _), Exit::Out(0x1e, _), Exit::Shutdown])),
            "CPUID faulting turned off by the VMM: CPUID in ring 3 runs", format!("{off:?}"));
    // A new guest, faulting turned on by the VMM.
    let mut g = Guest::real(&kvm, &USER_CODE);
    long_mode(&mut g);
    let on = (set(&g, 0x140, 1), ring3(&mut g, CODE));
    t.check(matches!(&on, (1, v) if matches!(v.as_slice(), [Exit::Out(0x1f, _), Exit::Shutdown])),
            "CPUID faulting turned on by the VMM: CPUID in ring 3 is #GP", format!("{on:?}"));

    // 25. Page tables outside guest RAM: PML4[1] points at 0x7fff_0000, past
    //     the 2 MiB of RAM, and the guest loads from, then stores to, an
    //     address it would map (0x80_0000_1234). The CPU's walk exits
    //     (EPT violation on a paging-structure read); the guest takes #PF,
    //     not present, CR2 = the address, W for the store, as KVM's
    //     emulator gives it; its handler reports CR2 and the error code.
    for (name, access, want) in [("a load", [0x8a, 0x03], 0u8), ("a store", [0x88, 0x03], 2)] {
        let mut code = vec![0x48, 0xbb];                      // mov rbx, 0x80_0000_1234
        code.extend_from_slice(&0x80_0000_1234u64.to_le_bytes());
        code.extend_from_slice(&access);                      // mov al, [rbx] / mov [rbx], al
        code.push(0xf4);                                      // hlt
        let mut g = Guest::real(&kvm, &code);
        long_mode(&mut g);
        g.write_u64(0x10000 + 8, 0x7fff_0000 | 3);
        idt64(&mut g, 14, &[
            0x0f, 0x20, 0xd0,   // mov rax, cr2
            0xe7, 0x1d,         // out 0x1d, eax
            0x58,               // pop rax (error code)
            0xe7, 0x1e,         // out 0x1e, eax
            0xf4,               // hlt
        ]);
        let got = (run(&mut g, 0), run(&mut g, 0), run(&mut g, 0));
        t.expect_eq(got, (Exit::Out(0x1d, vec![0x34, 0x12, 0, 0]), Exit::Out(0x1e, vec![want, 0, 0, 0]), Exit::Hlt),
                    &format!("{name} through page tables outside guest RAM: #PF, not present, CR2 = the address"));
    }

    // 16. Back to real mode after all that: the same guest runs again.
    let mut g = Guest::real(&kvm, &[0xb0, 0x33, 0xe6, 0x1a, 0xf4]);
    t.expect_eq(run(&mut g, 0), Exit::Out(0x1a, vec![0x33]), "a new VM after the others runs normally");
    drop(g);
    t.finish();
}
