# tools/lib.sh: settings shared by the scripts in tools/ (sourced, not run).
RVMX_CACHE=${RVMX_CACHE:-/var/cache/rvmx}
mkdir -p "$RVMX_CACHE"
# The kernel wants Debian's rustc (it ships rust-src); rustup's comes first on PATH.
RUSTC=${RUSTC:-/usr/bin/rustc}
BINDGEN=${BINDGEN:-$RVMX_CACHE/bindgen/bin/bindgen}
KMAKE_FLAGS="LLVM=1 RUSTC=$RUSTC BINDGEN=$BINDGEN"
log() { echo "rvmx: $*" >&2; }
die() { echo "rvmx: error: $*" >&2; exit 1; }
# install_pkgs PKG...: installs the Debian packages among PKG not yet
# installed (tools/setup, tools/kernel-deb; POSIX sh: tools/qemu-bundle
# sources this file with dash).
install_pkgs() {
    _need=
    for _p in "$@"; do
        dpkg-query -W -f='${Status}' "$_p" 2>/dev/null | grep -q "ok installed" || _need="$_need $_p"
    done
    [ -n "$_need" ] || return 0
    log "installing Debian packages:$_need"
    apt-get update -q >/dev/null
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $_need >/dev/null
}
# The test kernel's build: tools/kernel.config, plus tools/kernel-$RVMX_FLAVOR.config
# for a flavour (RVMX_FLAVOR=kasan: `make check-kasan`), each cached apart.
RVMX_FLAVOR=${RVMX_FLAVOR:-}
RVMX_KERNEL=${RVMX_KERNEL:-$RVMX_CACHE/kernel${RVMX_FLAVOR:+-$RVMX_FLAVOR}}
export RVMX_FLAVOR RVMX_KERNEL
# Where tools/build-user puts the static userspace binaries.
USER_BIN="$RVMX_CACHE/target/x86_64-unknown-linux-gnu/release"
