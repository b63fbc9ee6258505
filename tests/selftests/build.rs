//! Assembles the test guests in guests/*.asm with nasm (flat binaries),
//! into OUT_DIR, where the test programs embed them with `include_bytes!`.

use std::process::Command;

fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    println!("cargo:rerun-if-changed=guests");
    for entry in std::fs::read_dir("guests").unwrap() {
        let path = entry.unwrap().path();
        // *.inc files are included by the guests (nasm -i guests/).
        if path.extension().is_some_and(|e| e == "asm") {
            println!("cargo:rerun-if-changed={}", path.display());
            let bin = format!("{out}/{}.bin", path.file_stem().unwrap().to_str().unwrap());
            let ok = Command::new("nasm").args(["-f", "bin", "-i", "guests/", "-o", &bin]).arg(&path).status()
                .expect("nasm (installed by tools/setup)").success();
            assert!(ok, "nasm failed on {}", path.display());
        }
    }
}
