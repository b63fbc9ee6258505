//! vm_exits [--timeout S] QEMU [ARG...]: runs QEMU (a VMM not written for rvmx) on
//! rvmx or KVM and, when its guest is done, prints the VM exits each vCPU
//! took, from the vCPU's statistics file (KVM_GET_STATS_FD) as QEMU itself
//! reads it: its monitor's `info stats vcpu` (QEMU 7.1 and later).
//!
//! QEMU's vCPU files cannot be read from another process (KVM and rvmx
//! answer EIO to a vCPU ioctl from outside the VM's process), so this asks
//! QEMU. The guest ends by resetting or powering off its machine; with
//! `-action shutdown=pause` (added here, as is a monitor on a Unix socket)
//! QEMU then pauses instead of exiting, this program reads the statistics
//! of every vCPU through the monitor, and quits QEMU. Exits with QEMU's
//! status. If the guest is not done after S seconds, it prints where each
//! vCPU stands (`info registers`) and its exits so far, and kills QEMU
//! (exit status 124). A monitor that stops answering (QEMU's main loop
//! stuck) costs at most `MONITOR_WAIT` per command: the timeout holds
//! whether or not QEMU still listens.
//!
//! KVM counts exits by kind (io_exits, halt_exits, ...); rvmx also counts
//! them by VMX basic exit reason (exit_reason_N), printed here with the
//! SDM's names.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../../../../samples/rvmx-run/src/stats.rs"]
mod reader;

const SOCKET: &str = "/tmp/vm_exits.monitor";

/// How long one monitor command may take before the monitor counts as
/// not answering.
const MONITOR_WAIT: Duration = Duration::from_secs(20);

/// A connection to QEMU's human monitor (HMP).
struct Monitor(UnixStream);

impl Monitor {
    /// Reads up to the next "(qemu) " prompt.
    fn prompt(&mut self) -> std::io::Result<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"(qemu) ") {
            let n = self.0.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            out.extend_from_slice(&buf[..n]);
        }
        // The monitor echoes and redraws the line with escape sequences.
        let text = String::from_utf8_lossy(&out).replace('\r', "");
        Ok(text.trim_end_matches("(qemu) ").to_string())
    }

    fn command(&mut self, cmd: &str) -> std::io::Result<String> {
        self.0.write_all(format!("{cmd}\n").as_bytes())?;
        self.prompt()
    }
}

/// Prints `info stats vcpu` of the monitor's current vCPU, rvmx's
/// per-reason counters with their names.
fn print_stats(vcpu: u32, text: &str) {
    println!("vm_exits: vCPU {vcpu}:");
    let mut reasons: Vec<(u64, u32)> = Vec::new();
    for line in text.lines() {
        // "    exits (cumulative): 1234"
        let Some((name, value)) = line.trim().split_once(": ") else { continue };
        let name = name.split(" (").next().unwrap_or(name);
        let Ok(value) = value.trim().parse::<u64>() else { continue };
        if let Some(r) = name.strip_prefix("exit_reason_").and_then(|r| r.parse().ok()) {
            if value > 0 {
                reasons.push((value, r));
            }
        } else if (name == "exits" || name.ends_with("_exits") || name == "insn_emulation") && value > 0 {
            println!("vm_exits:   {name:<38} {value}");
        }
    }
    reasons.sort_by(|a, b| b.cmp(a));
    for (v, r) in reasons {
        println!("vm_exits:   VMX exit reason {r:>2} {:<25} {v}", reader::exit_reason_name(r));
    }
}

/// Whether a monitor read failed because no answer came in MONITOR_WAIT.
fn unanswered(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// After the timeout: each vCPU's registers and exits so far, as long as
/// the monitor answers.
fn print_where(m: &mut Monitor) {
    if m.command("stop").is_err() {
        println!("vm_exits:   QEMU's monitor stopped answering");
        return;
    }
    let cpus = m.command("info cpus").unwrap_or_default();
    let n = cpus.lines().filter(|l| l.contains("CPU #")).count().max(1);
    for cpu in 0..n as u32 {
        let _ = m.command(&format!("cpu {cpu}"));
        let Ok(regs) = m.command("info registers") else { return };
        for l in regs.lines().filter(|l| !l.contains("info registers")) {
            println!("vm_exits:   {l}");
        }
        print_stats(cpu, &m.command("info stats vcpu").unwrap_or_default());
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut timeout = None;
    if args.first().map(String::as_str) == Some("--timeout") && args.len() > 2 {
        timeout = args[1].parse::<u64>().ok().map(Duration::from_secs);
        args.drain(..2);
    }
    if args.is_empty() {
        eprintln!("usage: vm_exits [--timeout S] QEMU [ARG...]");
        std::process::exit(2);
    }
    let start = Instant::now();
    let _ = std::fs::remove_file(SOCKET);
    let mut child = match Command::new(&args[0])
        .args(&args[1..])
        .args(["-action", "shutdown=pause", "-monitor", &format!("unix:{SOCKET},server=on,wait=off")])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vm_exits: cannot run {}: {e}", args[0]);
            std::process::exit(127);
        }
    };
    let mut mon: Option<Monitor> = None;
    // Set when the monitor let a command go unanswered for MONITOR_WAIT:
    // no new connection then, since connecting to a socket that QEMU no
    // longer accepts on blocks once its backlog is full, timeout or not.
    let mut monitor_dead = false;
    let mut last_poll = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
        if timeout.is_some_and(|t| start.elapsed() > t) {
            println!("vm_exits: the guest is not done after {} s; where it stands:", start.elapsed().as_secs());
            match mon.as_mut() {
                Some(m) => print_where(m),
                None if monitor_dead => println!("vm_exits:   QEMU's monitor left a command unanswered for {} s", MONITOR_WAIT.as_secs()),
                None => println!("vm_exits:   no connection to QEMU's monitor"),
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(SOCKET);
            std::process::exit(124);
        }
        if mon.is_none() {
            if monitor_dead {
                continue;
            }
            if let Ok(s) = UnixStream::connect(SOCKET) {
                let _ = s.set_read_timeout(Some(MONITOR_WAIT));
                let mut m = Monitor(s);
                match m.prompt() {
                    Ok(_) => mon = Some(m),
                    Err(e) => monitor_dead = unanswered(&e),
                }
            }
            continue;
        }
        // Ask for the status once a second: "VM status: paused (shutdown)"
        // once the guest is done.
        if last_poll.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_poll = Instant::now();
        let Some(m) = mon.as_mut() else { continue };
        match m.command("info status") {
            Ok(s) if s.contains("paused (shutdown)") => {
                let cpus = m.command("info cpus").unwrap_or_default();
                let n = cpus.lines().filter(|l| l.contains("CPU #")).count().max(1);
                for cpu in 0..n as u32 {
                    let _ = m.command(&format!("cpu {cpu}"));
                    match m.command("info stats vcpu") {
                        Ok(t) => print_stats(cpu, &t),
                        Err(e) => println!("vm_exits: info stats vcpu: {e}"),
                    }
                }
                let _ = m.0.write_all(b"quit\n");
            }
            Ok(_) => {}
            Err(e) => {
                monitor_dead = unanswered(&e);
                mon = None;
            }
        }
    };
    let _ = std::fs::remove_file(SOCKET);
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(9)));
}
