#!/usr/bin/env bash
# Installs a native TensorFlow backend without the downloads tfjs-node's own install script needs
# (libtensorflow from Google storage, a prebuilt addon via node-pre-gyp), which are unreachable
# here. Instead it takes the TensorFlow shared libraries and C headers from a PyPI wheel and
# compiles the addon locally with node-gyp against the system Node headers.
#
#   bash scripts/install-native-tf.sh          CPU: @tensorflow/tfjs-node from `tensorflow-cpu`
#   bash scripts/install-native-tf.sh --gpu    GPU: @tensorflow/tfjs-node-gpu from `tensorflow`
#                                              (GPU-enabled on Linux x86_64) plus the CUDA
#                                              runtime wheels it declares (nvidia-*-cu12)
#
# `npm run setup` runs the CPU mode always and the GPU mode too where `nvidia-smi` sees a GPU
# (or with `npm run setup -- --gpu` / BACKDOOR_AUDIT_GPU=1); scripts/setup.sh.
#
# Run after `npm install`. Idempotent: a working install of the same wheel version is left alone
# (FORCE=1 rebuilds). Never fails the install: if any step fails, it removes the half-installed
# package (as npm does with a failed optional dependency), says why, and exits 0; the project then
# trains on the next backend (GPU mode: the CPU build; CPU mode: WebAssembly or pure JS).
#
# Environment:
#   TF_WHEEL_VERSION      CPU wheel (default 2.15.1)
#   TF_GPU_WHEEL_VERSION  GPU wheel (default 2.18.1)
#   NATIVE_TF_CACHE       CPU cache folder (default .cache/native-tf)
#   NATIVE_TF_GPU_CACHE   GPU cache folder (default .cache/native-tf-gpu): TF wheel, CUDA libraries
#   TFJS_NODE_GPU_DIR     where to put the GPU package (default node_modules/@tensorflow/tfjs-node-gpu;
#                         another folder gets the npm tarball unpacked, no `npm install`: used by
#                         test/backend/gpu-build.test.ts to leave node_modules alone)
#   NATIVE_TF_JOBS        compile jobs (default 2)
#   FORCE=1, PYTHON (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODE=cpu
for arg in "$@"; do
  case "$arg" in
    --gpu) MODE=gpu ;;
    --cpu) MODE=cpu ;;
    *) printf 'install-native-tf: unknown argument %s (use --cpu or --gpu)\n' "$arg" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
JOBS="${NATIVE_TF_JOBS:-2}"
CPU_PKG="$ROOT/node_modules/@tensorflow/tfjs-node"
GPU_PKG_DEFAULT="$ROOT/node_modules/@tensorflow/tfjs-node-gpu"

if [[ "$MODE" == cpu ]]; then
  # 2.15.1 is the oldest wheel whose C API lives in libtensorflow_cc.so.2; earlier wheels (2.9.1,
  # the version tfjs-node 4.22 was built against) export it only from the Python extension
  # _pywrap_tensorflow_internal.so, which cannot load without libpython. The C API is ABI-stable.
  # Newer wheels (2.18.1, 2.21.0 tried) work too but are no faster and have the same oneDNN
  # Conv2DBackpropFilter bug (docs/backends.md), so the tested version stays the default.
  TF_VERSION="${TF_WHEEL_VERSION:-2.15.1}"
  PIP_NAME=tensorflow-cpu
  NPM_NAME=@tensorflow/tfjs-node
  PKG="$CPU_PKG"
  TWIN="$GPU_PKG_DEFAULT"
  CACHE="${NATIVE_TF_CACHE:-$ROOT/.cache/native-tf}"
  TAG='install-native-tf'
else
  # 2.18.1: the libtensorflow_cc.so.2 of every `tensorflow` wheel from 2.16 on carries sm_90 (H100,
  # H200) machine code plus compute_90 PTX; 2.15.1 stops at sm_80 SASS + compute_80 PTX, so every
  # TensorFlow kernel would be JIT-compiled from Ampere PTX at first use on a Hopper GPU (counted
  # in the wheels' .nv_fatbin sections, docs/backends.md). Of those, 2.18 is the first built with
  # cuDNN 9 (9.3, CUDA 12.5), it pins exact nvidia-*-cu12 versions (2.20+ only give ranges), and the
  # tfjs-node binding is known to build and run against its C API (the CPU wheel was tried).
  TF_VERSION="${TF_GPU_WHEEL_VERSION:-2.18.1}"
  PIP_NAME=tensorflow
  NPM_NAME=@tensorflow/tfjs-node-gpu
  PKG="${TFJS_NODE_GPU_DIR:-$GPU_PKG_DEFAULT}"
  TWIN="$CPU_PKG"
  CACHE="${NATIVE_TF_GPU_CACHE:-$ROOT/.cache/native-tf-gpu}"
  TAG='install-native-tf --gpu'
fi
WHEEL_PREFIX="${PIP_NAME//-/_}"
# Only the default location is npm's; a folder elsewhere is private to whoever asked for it.
IN_NODE_MODULES=1
[[ "$PKG" == "$ROOT/node_modules/$NPM_NAME" ]] || IN_NODE_MODULES=0
PKG_SHOWN="${PKG#"$ROOT/"}"

say() { printf '%s: %s\n' "$TAG" "$*"; }

# Whether the addon in package folder $1 loads and computes; run from the project root in a fresh
# process. Prints the libtensorflow version and whether a GPU device was found.
native_probe() {
  TF_CPP_MIN_LOG_LEVEL=3 node -e "
    const tf = require(process.argv[1]);
    const y = tf.tensor1d([1, 2, 3]).square().dataSync();
    if (tf.getBackend() !== 'tensorflow' || y[2] !== 9) process.exit(1);
    const b = tf.backend();
    console.log('libtensorflow ' + b.binding.TF_Version + (b.isUsingGpuDevice ? ', GPU device found' : ', no GPU device'));
  " "$1" 2>/dev/null
}
native_works() { native_probe "$1" >/dev/null; }

# A tfjs-node(-gpu) copy without its addon registers its kernels and then throws when imported, so
# every later registration (by the other, working copy) warns about duplicates: remove such copies.
remove_unbuilt() {
  local dir="$1"
  if [[ -d "$dir" && ! -f "$dir/lib/napi-v8/tfjs_binding.node" ]]; then
    say "removing ${dir#"$ROOT/"} (no addon is built for it; see docs/backends.md)"
    rm -rf "$dir"
  fi
}

STEP='start'
fallback() {
  say "FAILED at step '$STEP'${1:+: $1}"
  # A package that cannot load is worse than none: importing it registers kernels before it
  # throws. Remove it so the project is exactly as after a plain `npm install`.
  [[ "$IN_NODE_MODULES" == 1 ]] && remove_unbuilt "$TWIN"
  if [[ -d "$PKG" ]] && native_works "$PKG"; then
    say "the native backend installed before still works and is left in place."
  else
    rm -rf "$PKG"
    if [[ "$MODE" == cpu ]]; then
      say "native TensorFlow backend NOT installed; training uses the pure-JS 'cpu' backend."
    else
      say "GPU build NOT installed; training uses the CPU build ('tensorflow') where it is installed."
    fi
  fi
  exit 0
}
trap 'fallback "command failed (exit $?) on line $LINENO"' ERR

if [[ ! -d "$ROOT/node_modules/@tensorflow/tfjs-core" ]]; then
  say "node_modules/@tensorflow/tfjs-core is missing: run 'npm install' first." >&2
  exit 1
fi

STEP='check platform'
if [[ "$(uname -s)" != Linux || "$(uname -m)" != x86_64 ]]; then
  fallback "only Linux x86_64 is supported by this script (found $(uname -s) $(uname -m))"
fi

# npm adds both packages from the lockfile (again at every later `npm install`); the one that is
# not built here only breaks imports.
[[ "$IN_NODE_MODULES" == 1 ]] && remove_unbuilt "$TWIN"

BUILD_INFO="$PKG/deps/BUILD-INFO"
if [[ "${FORCE:-0}" != 1 && -d "$PKG" ]] && native_works "$PKG" \
  && { [[ ! -f "$BUILD_INFO" ]] || grep -qx "wheel=$PIP_NAME==$TF_VERSION" "$BUILD_INFO"; }; then
  say "$NPM_NAME already loads with a working native backend ($(native_probe "$PKG")); nothing to do (FORCE=1 rebuilds)."
  exit 0
fi

STEP="add $NPM_NAME to ${PKG_SHOWN%/"$NPM_NAME"}"
mkdir -p "$CACHE"
TFJS_NODE_VERSION="$(node -p "
  const lock = require('./package-lock.json');
  (lock.packages && lock.packages['node_modules/$NPM_NAME'] || {}).version || '4.22.0'
")"
if [[ ! -f "$PKG/package.json" ]]; then
  if [[ "$IN_NODE_MODULES" == 1 ]]; then
    # Its install script would try the unreachable downloads, fail, and make npm drop it again.
    say "npm install --ignore-scripts --no-save $NPM_NAME@$TFJS_NODE_VERSION"
    npm install --ignore-scripts --no-save --no-audit --no-fund "$NPM_NAME@$TFJS_NODE_VERSION"
    remove_unbuilt "$TWIN"
  else
    # The tarball alone: its dependencies (the same as tfjs-node's) resolve from the project's
    # node_modules, so it shares tfjs-core (one kernel registry) with the project.
    [[ -d "$ROOT/node_modules/@mapbox/node-pre-gyp" && -d "$ROOT/node_modules/@tensorflow/tfjs" ]] \
      || fallback "$NPM_NAME's dependencies (@mapbox/node-pre-gyp, @tensorflow/tfjs) are not in node_modules: run the CPU install first"
    say "npm pack $NPM_NAME@$TFJS_NODE_VERSION -> $PKG_SHOWN"
    TARBALL="$(cd "$CACHE" && npm pack --silent "$NPM_NAME@$TFJS_NODE_VERSION" | tail -n1)"
    mkdir -p "$PKG"
    tar -xzf "$CACHE/$TARBALL" -C "$PKG" --strip-components=1
  fi
fi

STEP="download $PIP_NAME==$TF_VERSION from PyPI"
WHEEL="$(ls "$CACHE/$WHEEL_PREFIX-$TF_VERSION"-*manylinux*x86_64.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
  command -v "$PYTHON" >/dev/null || fallback "$PYTHON not found (pip is needed to fetch the wheel)"
  say "pip download $PIP_NAME==$TF_VERSION (about $([[ $MODE == cpu ]] && echo 250 || echo 600) MB) into ${CACHE#"$ROOT/"}"
  # The wheel is only unpacked, never installed, so the target Python tag is arbitrary. Wheels
  # up to 2.20 are tagged manylinux2014 (glibc 2.17); 2.21 only manylinux_2_27.
  "$PYTHON" -m pip download "$PIP_NAME==$TF_VERSION" --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    --dest "$CACHE" --quiet
  WHEEL="$(ls "$CACHE/$WHEEL_PREFIX-$TF_VERSION"-*manylinux*x86_64.whl | head -n1)"
else
  say "using cached wheel $(basename "$WHEEL")"
fi

CUDA_DIR=''
if [[ "$MODE" == gpu ]]; then
  # TensorFlow dlopen()s the CUDA runtime, cuBLAS, cuDNN, cuFFT, cuSPARSE, cuSOLVER... when it
  # creates its context; the `and-cuda` extra of the wheel names the NVIDIA wheels (and exact
  # versions) it was built against. The driver (libcuda.so.1) is the machine's own.
  STEP="download the CUDA runtime wheels that $PIP_NAME==$TF_VERSION declares (extra 'and-cuda')"
  CUDA_DIR="$CACHE/cuda-$TF_VERSION"
  if [[ ! -f "$CUDA_DIR/COMPLETE" ]]; then
    mapfile -t CUDA_REQS < <("$PYTHON" - "$WHEEL" <<'PY'
import re, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    for line in z.read(meta).decode().splitlines():
        # "Requires-Dist: nvidia-cudnn-cu12 (==8.9.4.25) ; extra == 'and-cuda'" (2.15) or
        # "Requires-Dist: nvidia-cudnn-cu12==9.3.0.75; extra == \"and-cuda\"" (later wheels)
        m = re.match(r'Requires-Dist:\s*([A-Za-z0-9_.-]+)\s*\(?([^;)]*)\)?\s*;(.*)$', line)
        if m and re.search(r'extra\s*==\s*.and-cuda.', m.group(3)):
            print(m.group(1) + m.group(2).replace(' ', ''))
PY
    )
    [[ ${#CUDA_REQS[@]} -gt 0 ]] || fallback "$(basename "$WHEEL") declares no 'and-cuda' requirements"
    say "pip download ${CUDA_REQS[*]} (about 1.8 GB for 2.18.1) into ${CUDA_DIR#"$ROOT/"}/wheels"
    rm -rf "$CUDA_DIR"
    mkdir -p "$CUDA_DIR/wheels"
    "$PYTHON" -m pip download "${CUDA_REQS[@]}" --no-deps --only-binary=:all: \
      --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
      --dest "$CUDA_DIR/wheels" --quiet
    STEP='unpack the CUDA libraries'
    # Everything under nvidia/ but headers and static libraries: the .so files (nvidia/*/lib) and
    # nvcc's ptxas/libdevice (used only by XLA). The wheels are deleted once unpacked.
    "$PYTHON" - "$CUDA_DIR" "$CUDA_DIR"/wheels/*.whl <<'PY'
import os, shutil, sys, zipfile
dest, wheels = sys.argv[1], sys.argv[2:]
for wheel in wheels:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            n = info.filename
            if n.endswith('/') or not n.startswith('nvidia/') or '/include/' in n or n.endswith('.a'):
                continue
            out = os.path.join(dest, n)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as src, open(out + '.part', 'wb') as f:
                shutil.copyfileobj(src, f, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(out + '.part', mode or 0o644)
            os.replace(out + '.part', out)
PY
    # "<bytes> <wheel>" per downloaded wheel: what was fetched, for the record (and the tests).
    (cd "$CUDA_DIR/wheels" && stat -c '%s %n' -- *.whl) >"$CUDA_DIR/COMPLETE"
    rm -rf "$CUDA_DIR/wheels"
  else
    say "using the CUDA libraries unpacked before in ${CUDA_DIR#"$ROOT/"}"
  fi
  say "CUDA libraries: ${CUDA_DIR#"$ROOT/"}/nvidia, $(du -sh "$CUDA_DIR/nvidia" | cut -f1) unpacked from $(wc -l <"$CUDA_DIR/COMPLETE") wheels of $(awk '{s += $1} END {printf "%.0f MB", s / 1e6}' "$CUDA_DIR/COMPLETE")"
fi

STEP='extract libtensorflow and C headers into the package deps/'
rm -rf "$PKG/deps"
mkdir -p "$PKG/deps/lib" "$PKG/deps/include"
"$PYTHON" - "$WHEEL" "$PKG/deps" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, deps = sys.argv[1], sys.argv[2]
libs = {'tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2'}
# The C API headers and the string-layout headers they include (found with `g++ -M`). The
# status headers moved from tsl/c to xla/tsl/c in later wheels (2.18 and 2.21 have them there).
headers = ['tensorflow/include/tensorflow/c/*', 'tensorflow/include/tensorflow/core/platform/ctstring*.h',
           'tensorflow/include/tsl/c/*', 'tensorflow/include/tsl/platform/ctstring*.h',
           'tensorflow/include/xla/tsl/c/*']
found = set()
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith('/'):
            continue
        if name in libs:
            dest = os.path.join(deps, 'lib', os.path.basename(name))
            found.add(name)
        elif any(fnmatch.fnmatch(name, p) for p in headers):
            dest = os.path.join(deps, 'include', name[len('tensorflow/include/'):])
        else:
            continue
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(name) as src, open(dest + '.part', 'wb') as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(dest + '.part', dest)
missing = libs - found
if missing:
    sys.exit(f'{wheel} lacks {sorted(missing)}')
PY
if command -v nm >/dev/null; then
  # grep -c reads all input: with -q, nm would die of SIGPIPE and fail the pipeline.
  [[ "$(nm -D --defined-only "$PKG/deps/lib/libtensorflow_cc.so.2" | grep -c ' T TFE_NewContext@')" -gt 0 ]] \
    || fallback "libtensorflow_cc.so.2 in the wheel does not export the eager C API (TFE_NewContext)"
fi
# binding.gyp links -ltensorflow -ltensorflow_framework; the linker records the sonames
# (libtensorflow_cc.so.2, libtensorflow_framework.so.2), found at run time through the
# addon's rpath $ORIGIN/../../deps/lib.
ln -sf libtensorflow_cc.so.2 "$PKG/deps/lib/libtensorflow.so"
ln -sf libtensorflow_cc.so.2 "$PKG/deps/lib/libtensorflow.so.2"
ln -sf libtensorflow_framework.so.2 "$PKG/deps/lib/libtensorflow_framework.so"
# tfjs-node's own install script (should npm ever run it, e.g. `npm rebuild`) deletes deps/ and
# re-downloads unless it finds libtensorflow.so.<its version>; with it, it only recompiles.
ln -sf libtensorflow_cc.so.2 "$PKG/deps/lib/libtensorflow.so.2.9.1"
ln -sf libtensorflow_framework.so.2 "$PKG/deps/lib/libtensorflow_framework.so.2.9.1"
[[ -f "$PKG/deps/include/tensorflow/c/eager/c_api.h" ]] || fallback "wheel has no tensorflow/c/eager/c_api.h"

if [[ "$MODE" == gpu ]]; then
  STEP='link the CUDA libraries beside libtensorflow'
  # Where the CUDA libraries must be: TensorFlow dlopen()s them from libtensorflow_framework.so.2
  # and libtensorflow_cc.so.2, and glibc's dlopen searches the RUNPATH of the *calling* library,
  # not the addon's (DT_RUNPATH is not inherited), so an rpath on tfjs_binding.node would not
  # reach them; LD_LIBRARY_PATH is read once by ld.so at process start, too late inside Node.
  # Both TF libraries' RUNPATH starts with $ORIGIN/, so a symlink per library in deps/lib is
  # found. The flat folder also serves the CUDA libraries' own references, which their wheels
  # resolve through $ORIGIN (libcusparse -> libnvJitLink, cuDNN -> its sub-libraries): glibc
  # takes $ORIGIN from the path a library was opened by (the symlink), so they find each other
  # here too, including the ones TensorFlow's RUNPATH does not list (nvJitLink, NVRTC, NCCL).
  # The files stay in the cache, so node_modules grows by symlinks only.
  REL_CUDA="$(realpath --relative-to="$PKG/deps/lib" "$CUDA_DIR/nvidia")"
  n=0
  while IFS= read -r -d '' so; do
    name="$(basename "$so")"
    if [[ -e "$PKG/deps/lib/$name" ]]; then
      say "warning: two CUDA wheels ship $name; keeping the first"
      continue
    fi
    ln -s "$REL_CUDA/${so#"$CUDA_DIR/nvidia/"}" "$PKG/deps/lib/$name"
    n=$((n + 1))
  done < <(find "$CUDA_DIR/nvidia" -path '*/lib/*' -name '*.so*' -type f -print0 | sort -z)
  say "deps/lib: libtensorflow + $n CUDA library links into ${CUDA_DIR#"$ROOT/"}/nvidia"
  # The CUDA libraries' own dependencies must resolve from there (libcuda.so.1 is the driver's).
  if command -v ldd >/dev/null; then
    unresolved="$(cd "$PKG/deps/lib" && for f in libcudart.so.* libcublas*.so.* libcudnn*.so.* libcufft.so.* libcusparse.so.* libcusolver.so.*; do
      [[ -e "$f" ]] && ldd "$f" 2>/dev/null | grep 'not found' | grep -v 'libcuda\.so' | sed "s|^|$f: |"; done || true)"
    [[ -z "$unresolved" ]] || say "warning: unresolved CUDA library dependencies: $(echo "$unresolved" | tr '\n' ';' | tr -s ' \t' ' ')"
  fi
else
  say "deps/lib: $(cd "$PKG/deps/lib" && ls | tr '\n' ' ')"
fi

STEP='locate node-gyp and Node headers'
NODE_GYP=''
NPM_DIR="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
for c in "$NPM_DIR/node_modules/node-gyp/bin/node-gyp.js" "$ROOT/node_modules/node-gyp/bin/node-gyp.js"; do
  [[ -f "$c" ]] && { NODE_GYP="$c"; break; }
done
[[ -n "$NODE_GYP" ]] || fallback "node-gyp not found (looked in npm's bundled copy)"
NODEDIR_ARGS=()
NODE_PREFIX="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
for d in "$NODE_PREFIX" /usr /usr/local; do
  if [[ -f "$d/include/node/node_api.h" && -f "$d/include/node/common.gypi" ]]; then
    NODEDIR_ARGS=(--nodedir="$d"); break
  fi
done
# Without local headers node-gyp would download them, which fails here.
[[ ${#NODEDIR_ARGS[@]} -gt 0 ]] || fallback "no Node headers (include/node/node_api.h) under $NODE_PREFIX, /usr or /usr/local"
command -v make >/dev/null && command -v g++ >/dev/null || fallback "make and g++ are needed to compile the addon"

STEP="compile the $NPM_NAME addon with node-gyp"
# The path the package loads the addon from, as node-pre-gyp resolves it (lib/napi-v<N>).
BINDING="$(cd "$PKG" && NODE_PATH="$ROOT/node_modules" node -p "require('@mapbox/node-pre-gyp').find(require('path').resolve('package.json'))")"
NAPI_VERSION="$(basename "$(dirname "$BINDING")")"; NAPI_VERSION="${NAPI_VERSION#napi-v}"
say "node-gyp rebuild ${NODEDIR_ARGS[*]} --jobs=$JOBS -> ${BINDING#"$ROOT/"}"
(
  cd "$PKG"
  node "$NODE_GYP" rebuild "${NODEDIR_ARGS[@]}" --jobs="$JOBS" \
    --module_name=tfjs_binding --module_path="$(dirname "$BINDING")" --napi_build_version="$NAPI_VERSION" \
    >"$CACHE/node-gyp.log" 2>&1
) || fallback "node-gyp failed; see ${CACHE#"$ROOT/"}/node-gyp.log"
[[ -f "$BINDING" ]] || fallback "node-gyp did not produce $BINDING"
rm -rf "$PKG/build"
{
  echo "wheel=$PIP_NAME==$TF_VERSION"
  [[ -z "$CUDA_DIR" ]] || echo "cuda=$CUDA_DIR"
} >"$BUILD_INFO"

STEP="load $NPM_NAME"
PROBE="$(native_probe "$PKG")" || fallback "the addon was built but $NPM_NAME does not load"
trap - ERR
if [[ "$MODE" == cpu ]]; then
  say "OK: @tensorflow/tfjs-node uses libtensorflow from tensorflow-cpu $TF_VERSION (PyPI); backend 'tensorflow' is available."
else
  say "OK: $PKG_SHOWN uses libtensorflow from tensorflow $TF_VERSION (PyPI) with the CUDA libraries of its 'and-cuda' extra ($PROBE)."
  [[ "$PROBE" == *'GPU device found'* ]] \
    || say "no GPU here: the GPU build loads and TensorFlow runs on the CPU ('auto' says so and uses it as 'tensorflow')."
fi
