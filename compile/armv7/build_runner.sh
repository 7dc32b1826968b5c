#!/usr/bin/env bash
# Cross-compile run_artifact.cc (edgecv's Python-free Relax VM runner) against a TVM runtime.
#
# usage: build_runner.sh OUT_DIR RUNTIME_DIR [--arch armv7|aarch64]
#   RUNTIME_DIR is either the output of build_runtime.sh (flat: libtvm_ffi.so, libtvm_runtime.so,
#   include/) or, for aarch64, a site-packages dir holding the PyPI aarch64 wheels of apache-tvm
#   and apache-tvm-ffi (tvm/lib/libtvm_runtime.so, tvm_ffi/lib/libtvm_ffi.so, tvm_ffi/include/).
#   OUT_DIR receives run_artifact plus copies of both libraries (the runner's rpath is $ORIGIN),
#   so the directory can be copied to a device as is.  Idempotent (stamp of all inputs).
# Run on this x86 host with e.g.: qemu-arm-static -L /usr/arm-linux-gnueabihf OUT_DIR/run_artifact ...
set -euo pipefail

die() { printf 'build_runner.sh: error: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found (install Debian package $2)"; }

ARCH=armv7
POS=()
while (($#)); do
  case "$1" in
    --arch) [[ $# -ge 2 ]] || die "--arch needs a value"; ARCH="$2"; shift 2 ;;
    --arch=*) ARCH="${1#--arch=}"; shift ;;
    -*) die "unknown option $1" ;;
    *) POS+=("$1"); shift ;;
  esac
done
[[ ${#POS[@]} -eq 2 ]] || die "usage: build_runner.sh OUT_DIR RUNTIME_DIR [--arch armv7|aarch64]"
OUT="${POS[0]}"
RT="$(cd "${POS[1]}" 2>/dev/null && pwd)" || die "runtime dir ${POS[1]} not found"

case "$ARCH" in
  armv7) TRIPLE=arm-linux-gnueabihf; ARCH_FLAGS=(-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard) ;;
  aarch64) TRIPLE=aarch64-linux-gnu; ARCH_FLAGS=(-march=armv8-a) ;;
  *) die "unknown --arch $ARCH (armv7 or aarch64)" ;;
esac
CXX="$TRIPLE-g++"
need "$CXX" "g++-$TRIPLE"
need sha256sum coreutils

# Locate the libraries and tvm-ffi headers (flat layout first, then wheel layout).
find_one() { for p in "$@"; do [[ -e "$p" ]] && { echo "$p"; return; }; done; }
FFI_LIB="$(find_one "$RT/libtvm_ffi.so" "$RT/tvm_ffi/lib/libtvm_ffi.so")"
RT_LIB="$(find_one "$RT/libtvm_runtime.so" "$RT/tvm/lib/libtvm_runtime.so")"
INC="$(find_one "$RT/include/tvm/ffi" "$RT/tvm_ffi/include/tvm/ffi")"
[[ -n "$FFI_LIB" ]] || die "no libtvm_ffi.so in $RT"
[[ -n "$RT_LIB" ]] || die "no libtvm_runtime.so in $RT"
[[ -n "$INC" ]] || die "no tvm-ffi headers (include/tvm/ffi) in $RT"
INC="$(dirname "$(dirname "$INC")")"
[[ -f "$INC/dlpack/dlpack.h" ]] || die "no dlpack/dlpack.h next to the tvm-ffi headers in $INC"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STAMP="$( (echo "$ARCH ${ARCH_FLAGS[*]}"; sha256sum "$HERE/run_artifact.cc" "$HERE/build_runner.sh" \
            "$FFI_LIB" "$RT_LIB" | awk '{print $1}') | sha256sum | cut -c1-16)"
if [[ -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$STAMP" && -x "$OUT/run_artifact" ]]; then
  echo "[runner] up to date: $OUT/run_artifact"
  exit 0
fi

START=$SECONDS
mkdir -p "$(dirname "$OUT")"
STAGE="$(mktemp -d "$(dirname "$OUT")/.runner.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp "$FFI_LIB" "$RT_LIB" "$STAGE/"
# The runner references nothing in libtvm_runtime directly, but it must be loaded (it registers
# the relax.VMExecutable loader): keep it as a DT_NEEDED entry with --no-as-needed.
"$CXX" -std=c++17 -O2 "${ARCH_FLAGS[@]}" -Wall -Wno-psabi -I"$INC" \
    "$HERE/run_artifact.cc" -o "$STAGE/run_artifact" \
    -L"$STAGE" -Wl,--no-as-needed -ltvm_runtime -ltvm_ffi -Wl,--as-needed -Wl,-rpath,'$ORIGIN' \
    || die "compiling run_artifact.cc for $TRIPLE failed"
echo "$STAMP" > "$STAGE/.stamp"
chmod 755 "$STAGE"
if [[ -e "$OUT" ]]; then rm -rf "$OUT.old"; mv "$OUT" "$OUT.old"; fi
mv "$STAGE" "$OUT"
rm -rf "$OUT.old"
echo "[runner] built $OUT/run_artifact for $ARCH in $((SECONDS - START)) s"
