#!/usr/bin/env bash
# Build the TVM 0.27 *runtime* (libtvm_ffi.so + libtvm_runtime.so) for 32-bit ARM Linux,
# hard float (arm-linux-gnueabihf: armv7-a, VFPv4 + NEON), so armv7 artifacts can be run.
# PyPI has no armv7 wheels of apache-tvm / apache-tvm-ffi; this builds the two libraries from
#   - the apache-tvm-ffi sdist (CMake >= 3.26 from PyPI, with a cross toolchain file written below), and
#   - the runtime sources the apache-tvm wheel ships under tvm/src/runtime, plus edgecv's own
#     versions of the few headers the wheel leaves out (compile/armv7/include/).
#
# usage: build_runtime.sh [OUT_DIR]
#        build_runtime.sh --print-dir     (print the default OUT_DIR and exit)
#   OUT_DIR defaults to ~/.cache/edgecv/armv7/runtime-<hash>, hash = sha256 of this script,
#   edgecv's headers (include/) and the pinned versions.  Idempotent: an up-to-date OUT_DIR is
#   left alone.  Result: OUT_DIR/{libtvm_ffi.so,libtvm_runtime.so,include/,BUILD_INFO.json}.
# env: EDGECV_ARMV7_CACHE (default ~/.cache/edgecv/armv7), EDGECV_PYTHON (default python3),
#      EDGECV_JOBS (default nproc).
set -euo pipefail

TVM_VERSION=0.27.0.post1
TVM_FFI_VERSION=0.1.14.post0
# sha256 of the exact PyPI files used as build inputs (pip verifies them).
TVM_WHEEL_PLATFORM=manylinux_2_28_x86_64   # any platform's wheel ships the same runtime sources
TVM_WHEEL_SHA256=f503fc903b6e16fda5daacac6698ecb8bc38937f57da7aa29f6c7ab169d08657
TVM_FFI_SDIST_SHA256=53cb68ac05ca84fd32042211c13fcee372729dcbff537f8689289b7f2f7d765d
CMAKE_REQ='cmake>=3.26,<5'
NINJA_REQ='ninja>=1.11,<2'

TRIPLE=arm-linux-gnueabihf
ARCH_FLAGS=(-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard)
CXXFLAGS=(-std=c++17 -O2 -fPIC "${ARCH_FLAGS[@]}" -fvisibility=hidden -fvisibility-inlines-hidden
          -ffunction-sections -fdata-sections -DNDEBUG -DTVM_FFI_CMAKE_LITTLE_ENDIAN=1 -Wno-psabi)
# CPU-only Relax VM runtime (no RPC, disco, CUDA/OpenCL/Hexagon, LLM KV-cache helpers, contrib).
RUNTIME_SOURCES=(
  builtin_fp16.cc const_loader_module.cc cpu_device_api.cc device_api.cc file_utils.cc logging.cc
  module.cc tensor.cc thread_pool.cc threading_backend.cc workspace_pool.cc memory/memory_manager.cc
  vm/builtin.cc vm/bytecode.cc vm/executable.cc vm/vm.cc
)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${EDGECV_ARMV7_CACHE:-$HOME/.cache/edgecv/armv7}"
PYTHON="${EDGECV_PYTHON:-python3}"
JOBS="${EDGECV_JOBS:-$(nproc 2>/dev/null || echo 2)}"
START=$SECONDS
PRINT_DIR=0
if [[ "${1:-}" == "--print-dir" ]]; then PRINT_DIR=1; shift; fi

say() { printf '[armv7-runtime %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf 'build_runtime.sh: error: %s\n' "$*" >&2; exit 1; }
need() {  # need TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "$1 not found (install Debian package $2)"
}

# ---- content hash -> default output dir ---------------------------------------------------
hash_inputs() {
  printf 'tvm=%s tvm-ffi=%s wheel=%s sdist=%s\n' "$TVM_VERSION" "$TVM_FFI_VERSION" \
    "$TVM_WHEEL_SHA256" "$TVM_FFI_SDIST_SHA256"
  (cd "$HERE" && find build_runtime.sh include -type f | LC_ALL=C sort |
     xargs sha256sum)
}
HASH="$(hash_inputs | sha256sum | cut -c1-12)"
if (( PRINT_DIR )); then echo "$CACHE/runtime-$HASH"; exit 0; fi

need "$TRIPLE-g++" "g++-$TRIPLE"
need "$TRIPLE-gcc" "gcc-$TRIPLE"
need "$TRIPLE-readelf" "binutils-$TRIPLE"
need make make
need flock util-linux
need sha256sum coreutils
need "$PYTHON" python3
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON cannot create venvs (install Debian package python3-venv)"
OUT="${1:-$CACHE/runtime-$HASH}"
mkdir -p "$CACHE" "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"

up_to_date() { [[ -f "$OUT/BUILD_INFO.json" ]] && grep -q "\"hash\": \"$HASH\"" "$OUT/BUILD_INFO.json"; }
if up_to_date; then say "up to date: $OUT"; exit 0; fi

exec 9>"$CACHE/.build-runtime.lock"
flock 9
if up_to_date; then say "up to date (built meanwhile): $OUT"; exit 0; fi
say "building TVM $TVM_VERSION runtime for $TRIPLE -> $OUT"

# ---- tools: cmake >= 3.26 and ninja from PyPI, in a private venv ---------------------------
TOOLS="$CACHE/tools"
if ! "$TOOLS/bin/python" -c 'import sys' 2>/dev/null; then
  say "creating tools venv $TOOLS"
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS" || die "cannot create venv $TOOLS (install Debian package python3-venv)"
fi
tools_ok() {
  [[ -x "$TOOLS/bin/cmake" && -x "$TOOLS/bin/ninja" ]] || return 1
  local v; v="$("$TOOLS/bin/cmake" --version | head -1 | awk '{print $3}')"
  [[ "$(printf '%s\n3.26\n' "$v" | sort -V | head -1)" == "3.26" ]]
}
if ! tools_ok; then
  say "installing $CMAKE_REQ $NINJA_REQ into $TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "$CMAKE_REQ" "$NINJA_REQ" ||
    die "pip install $CMAKE_REQ $NINJA_REQ failed (PyPI packages cmake, ninja)"
  tools_ok || die "cmake >= 3.26 not usable in $TOOLS (PyPI package cmake)"
fi

# ---- build inputs from PyPI (cached, hash-checked) ------------------------------------------
DL="$CACHE/downloads"
mkdir -p "$DL"
fetch() {  # fetch GLOB REQUIREMENT SHA256 PIP_ARGS...  -> prints the file path
  local glob="$1" req="$2" sha="$3"; shift 3
  local f
  f="$(ls "$DL"/$glob 2>/dev/null | head -1 || true)"
  if [[ -n "$f" ]] && echo "$sha  $f" | sha256sum -c --status; then echo "$f"; return; fi
  rm -f "$DL"/$glob
  say "downloading $req" >&2
  local reqfile; reqfile="$(mktemp)"
  printf '%s --hash=sha256:%s\n' "$req" "$sha" > "$reqfile"
  "$TOOLS/bin/pip" download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$reqfile" -d "$DL" "$@" >&2 || { rm -f "$reqfile"; die "pip download $req failed"; }
  rm -f "$reqfile"
  f="$(ls "$DL"/$glob 2>/dev/null | head -1 || true)"
  [[ -n "$f" ]] || die "pip download $req produced no $glob"
  echo "$f"
}
SDIST="$(fetch "apache_tvm_ffi-$TVM_FFI_VERSION.tar.gz" "apache-tvm-ffi==$TVM_FFI_VERSION" \
         "$TVM_FFI_SDIST_SHA256" --no-binary apache-tvm-ffi)"
WHEEL="$(fetch "apache_tvm-$TVM_VERSION-*.whl" "apache-tvm==$TVM_VERSION" "$TVM_WHEEL_SHA256" \
         --only-binary :all: --platform "$TVM_WHEEL_PLATFORM" --python-version 3.11)"

# ---- work dir ------------------------------------------------------------------------------
WORK="$(mktemp -d "$CACHE/.build-runtime.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/out"
mkdir -p "$STAGE/include"

# ---- 1. libtvm_ffi.so from the sdist --------------------------------------------------------
# CMake toolchain file for Debian's cross g++ (armv7-a, VFPv4 + NEON, hard-float ABI).
cat > "$WORK/toolchain-armhf.cmake" <<EOF
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_C_COMPILER   $TRIPLE-gcc)
set(CMAKE_CXX_COMPILER $TRIPLE-g++)
set(CMAKE_AR     $(command -v "$TRIPLE-ar") CACHE FILEPATH "")
set(CMAKE_RANLIB $(command -v "$TRIPLE-ranlib") CACHE FILEPATH "")
set(CMAKE_NM     $(command -v "$TRIPLE-nm") CACHE FILEPATH "")
set(CMAKE_STRIP  $(command -v "$TRIPLE-strip") CACHE FILEPATH "")
set(CMAKE_C_FLAGS_INIT   "${ARCH_FLAGS[*]}")
set(CMAKE_CXX_FLAGS_INIT "${ARCH_FLAGS[*]} -Wno-psabi")
set(CMAKE_FIND_ROOT_PATH /usr/$TRIPLE)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF
say "libtvm_ffi: configuring ($(basename "$SDIST"))"
tar -xzf "$SDIST" -C "$WORK"
FFI_SRC="$WORK/apache_tvm_ffi-$TVM_FFI_VERSION"
[[ -f "$FFI_SRC/CMakeLists.txt" ]] || die "unexpected sdist layout: $FFI_SRC/CMakeLists.txt missing"
"$TOOLS/bin/cmake" -S "$FFI_SRC" -B "$WORK/ffi-build" -G Ninja \
    -DCMAKE_MAKE_PROGRAM="$TOOLS/bin/ninja" \
    -DCMAKE_TOOLCHAIN_FILE="$WORK/toolchain-armhf.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DTVM_FFI_BUILD_TESTS=OFF -DTVM_FFI_BUILD_PYTHON_MODULE=OFF \
    > "$WORK/ffi-configure.log" 2>&1 || { tail -40 "$WORK/ffi-configure.log" >&2; die "libtvm_ffi: cmake configure failed"; }
say "libtvm_ffi: compiling (-j$JOBS)"
"$TOOLS/bin/cmake" --build "$WORK/ffi-build" --target tvm_ffi_shared -j "$JOBS" \
    > "$WORK/ffi-build.log" 2>&1 || { grep -E 'error|Error' "$WORK/ffi-build.log" | head -40 >&2; die "libtvm_ffi: build failed"; }
cp "$WORK/ffi-build/lib/libtvm_ffi.so" "$STAGE/"
cp -r "$FFI_SRC/include/tvm" "$STAGE/include/"
cp -r "$FFI_SRC/3rdparty/dlpack/include/dlpack" "$STAGE/include/"

# ---- 2. libtvm_runtime.so from the wheel's runtime sources ----------------------------------
say "libtvm_runtime: extracting sources from $(basename "$WHEEL")"
TVM_TREE="$WORK/tvm"
"$PYTHON" - "$WHEEL" "$TVM_TREE" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(("tvm/src/runtime/", "tvm/include/tvm/runtime/"))]
    if not names:
        sys.exit(f"{wheel}: no tvm/src/runtime sources inside")
    for n in names:
        z.extract(n, dest)
EOF
TVM_TREE="$TVM_TREE/tvm"
# edgecv's private-header stand-ins go where the sources' relative includes look (src/support/).
cp -r "$HERE/include/src/support" "$TVM_TREE/src/"
INCLUDES=(-I"$HERE/include" -I"$HERE/include/compiler-rt" -I"$TVM_TREE/include"
          -I"$STAGE/include")
mkdir -p "$WORK/obj"
for s in "${RUNTIME_SOURCES[@]}"; do
  [[ -f "$TVM_TREE/src/runtime/$s" ]] || die "runtime source $s missing from the wheel"
done
say "libtvm_runtime: compiling ${#RUNTIME_SOURCES[@]} sources (-j$JOBS)"
export TRIPLE WORK TVM_TREE
# (file-prefix-map: error messages and the binary name sources as src/runtime/..., not the temp dir)
export CXXFLAGS_STR="${CXXFLAGS[*]} ${INCLUDES[*]} -ffile-prefix-map=$TVM_TREE/= -ffile-prefix-map=$STAGE/include/=include/ -ffile-prefix-map=$HERE/=compile/armv7/"
printf '%s\n' "${RUNTIME_SOURCES[@]}" | xargs -P "$JOBS" -I{} bash -c '
  s="{}"; o="$WORK/obj/${s//\//_}.o"
  if ! "$TRIPLE-g++" $CXXFLAGS_STR -c "$TVM_TREE/src/runtime/$s" -o "$o" 2> "$o.log"; then
    echo "--- $s" >&2; head -40 "$o.log" >&2; exit 255
  fi' || die "libtvm_runtime: compiling the runtime sources failed (see above)"
say "libtvm_runtime: linking"
"$TRIPLE-g++" -shared -o "$STAGE/libtvm_runtime.so" "$WORK"/obj/*.o "${ARCH_FLAGS[@]}" \
    -L"$STAGE" -ltvm_ffi -lpthread -ldl -Wl,--no-undefined -Wl,--gc-sections \
    -Wl,-soname,libtvm_runtime.so -Wl,-rpath,'$ORIGIN' \
    || die "libtvm_runtime: link failed"

# ---- check and publish ----------------------------------------------------------------------
for lib in libtvm_ffi.so libtvm_runtime.so; do
  hdr="$("$TRIPLE-readelf" -h "$STAGE/$lib")"
  grep -q 'ELF32' <<<"$hdr" && grep -q 'Machine: *ARM' <<<"$hdr" && grep -q 'hard-float' <<<"$hdr" \
    || die "$lib is not an ELF32 ARM hard-float library"
done
size_of() { stat -c %s "$STAGE/$1"; }
cat > "$STAGE/BUILD_INFO.json" <<EOF
{
  "hash": "$HASH",
  "target": "$TRIPLE",
  "arch_flags": "${ARCH_FLAGS[*]}",
  "apache_tvm": "$TVM_VERSION",
  "apache_tvm_ffi": "$TVM_FFI_VERSION",
  "runtime_sources": [$(printf '"%s",' "${RUNTIME_SOURCES[@]}" | sed 's/,$//')],
  "sizes": {"libtvm_ffi.so": $(size_of libtvm_ffi.so), "libtvm_runtime.so": $(size_of libtvm_runtime.so)},
  "build_seconds": $((SECONDS - START))
}
EOF
if [[ -e "$OUT" ]]; then
  mv "$OUT" "$WORK/previous"   # replaced atomically enough: old copy removed with the work dir
fi
mv "$STAGE" "$OUT"
say "libtvm_ffi.so $(stat -c %s "$OUT/libtvm_ffi.so") B, libtvm_runtime.so $(stat -c %s "$OUT/libtvm_runtime.so") B"
say "done in $((SECONDS - START)) s: $OUT"
