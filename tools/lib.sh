# tools/lib.sh: settings shared by the scripts in tools/ (sourced, not run).
RVMX_CACHE=${RVMX_CACHE:-/var/cache/rvmx}
mkdir -p "$RVMX_CACHE"
# The kernel wants Debian's rustc (it ships rust-src); rustup's comes first on PATH.
RUSTC=${RUSTC:-/usr/bin/rustc}
BINDGEN=${BINDGEN:-$RVMX_CACHE/bindgen/bin/bindgen}
KMAKE_FLAGS="LLVM=1 RUSTC=$RUSTC BINDGEN=$BINDGEN"
log() { echo "rvmx: $*" >&2; }
die() { echo "rvmx: error: $*" >&2; exit 1; }
# The test kernel's build: tools/kernel.config, plus tools/kernel-$RVMX_FLAVOR.config
# for a flavour (RVMX_FLAVOR=kasan: `make check-kasan`), each cached apart.
RVMX_FLAVOR=${RVMX_FLAVOR:-}
RVMX_KERNEL=${RVMX_KERNEL:-$RVMX_CACHE/kernel${RVMX_FLAVOR:+-$RVMX_FLAVOR}}
export RVMX_FLAVOR RVMX_KERNEL
# Where tools/build-user puts the static userspace binaries.
USER_BIN="$RVMX_CACHE/target/x86_64-unknown-linux-gnu/release"
