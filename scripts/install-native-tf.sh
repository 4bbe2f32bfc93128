#!/usr/bin/env bash
# Installs the native TensorFlow backend (@tensorflow/tfjs-node) without the downloads its own
# install script needs (libtensorflow from Google storage, a prebuilt addon via node-pre-gyp),
# which are unreachable here. Instead it takes the TensorFlow shared libraries and C headers
# from the PyPI `tensorflow-cpu` wheel and compiles the addon locally with node-gyp against the
# system Node headers.
#
# Run after `npm install`. Idempotent: a working install is left alone (FORCE=1 rebuilds).
# Never fails the install: if any step fails, it removes the half-installed package (as npm does
# with a failed optional dependency), says why, and exits 0; the project then trains on the
# pure-JS backend.
#
# Environment: TF_WHEEL_VERSION (default 2.15.1), FORCE=1, PYTHON (default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# 2.15.1 is the oldest wheel whose C API lives in libtensorflow_cc.so.2; earlier wheels (2.9.1,
# the version tfjs-node 4.22 was built against) export it only from the Python extension
# _pywrap_tensorflow_internal.so, which cannot load without libpython. The C API is ABI-stable.
# Newer wheels (2.18.1, 2.21.0 tried) work too but are no faster and have the same oneDNN
# Conv2DBackpropFilter bug (docs/backends.md), so the tested version stays the default.
TF_WHEEL_VERSION="${TF_WHEEL_VERSION:-2.15.1}"
PYTHON="${PYTHON:-python3}"
CACHE="$ROOT/.cache/native-tf"
PKG="$ROOT/node_modules/@tensorflow/tfjs-node"
GPU_PKG="$ROOT/node_modules/@tensorflow/tfjs-node-gpu"

say() { printf 'install-native-tf: %s\n' "$*"; }

# Whether the addon loads and computes; run from the project root in a fresh process.
native_works() {
  TF_CPP_MIN_LOG_LEVEL=2 node -e "
    const tf = require('@tensorflow/tfjs-node');
    const y = tf.tensor1d([1, 2, 3]).square().dataSync();
    if (tf.getBackend() !== 'tensorflow' || y[2] !== 9) process.exit(1);
  " >/dev/null 2>&1
}

STEP='start'
fallback() {
  say "FAILED at step '$STEP'${1:+: $1}"
  # A package that cannot load is worse than none: importing it registers kernels before it
  # throws. Remove it so the project is exactly as after a plain `npm install`.
  [[ -f "$GPU_PKG/lib/napi-v8/tfjs_binding.node" ]] || rm -rf "$GPU_PKG"
  if [[ -d "$PKG" ]] && native_works; then
    say "the native backend installed before still works and is left in place."
  else
    rm -rf "$PKG"
    say "native TensorFlow backend NOT installed; training uses the pure-JS 'cpu' backend."
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

# npm adds the GPU twin from the lockfile (again at every later `npm install`); without its addon
# it only breaks imports: loading it registers the tensorflow kernels before failing.
remove_gpu_twin() {
  if [[ -d "$GPU_PKG" && ! -f "$GPU_PKG/lib/napi-v8/tfjs_binding.node" ]]; then
    say "removing node_modules/@tensorflow/tfjs-node-gpu (no GPU addon is built here; see docs/backends.md)"
    rm -rf "$GPU_PKG"
  fi
}
remove_gpu_twin

if [[ "${FORCE:-0}" != 1 && -d "$PKG" ]] && native_works; then
  say "@tensorflow/tfjs-node already loads with a working native backend; nothing to do (FORCE=1 rebuilds)."
  exit 0
fi

STEP='add @tensorflow/tfjs-node to node_modules'
if [[ ! -f "$PKG/package.json" ]]; then
  # Its install script would try the unreachable downloads, fail, and make npm drop it again.
  TFJS_NODE_VERSION="$(node -p "
    const lock = require('./package-lock.json');
    (lock.packages && lock.packages['node_modules/@tensorflow/tfjs-node'] || {}).version || '4.22.0'
  ")"
  say "npm install --ignore-scripts --no-save @tensorflow/tfjs-node@$TFJS_NODE_VERSION"
  npm install --ignore-scripts --no-save --no-audit --no-fund "@tensorflow/tfjs-node@$TFJS_NODE_VERSION"
  remove_gpu_twin
fi

STEP="download tensorflow-cpu==$TF_WHEEL_VERSION from PyPI"
mkdir -p "$CACHE"
WHEEL="$(ls "$CACHE"/tensorflow_cpu-"$TF_WHEEL_VERSION"-*manylinux*x86_64.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$WHEEL" ]]; then
  command -v "$PYTHON" >/dev/null || fallback "$PYTHON not found (pip is needed to fetch the wheel)"
  say "pip download tensorflow-cpu==$TF_WHEEL_VERSION (about 250 MB) into .cache/native-tf"
  # The wheel is only unpacked, never installed, so the target Python tag is arbitrary. Wheels
  # up to 2.20 are tagged manylinux2014 (glibc 2.17); 2.21 only manylinux_2_27.
  "$PYTHON" -m pip download "tensorflow-cpu==$TF_WHEEL_VERSION" --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_27_x86_64 --platform manylinux2014_x86_64 \
    --dest "$CACHE" --quiet
  WHEEL="$(ls "$CACHE"/tensorflow_cpu-"$TF_WHEEL_VERSION"-*manylinux*x86_64.whl | head -n1)"
else
  say "using cached wheel $(basename "$WHEEL")"
fi

STEP='extract libtensorflow and C headers into tfjs-node/deps'
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
say "deps/lib: $(cd "$PKG/deps/lib" && ls | tr '\n' ' ')"

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

STEP='compile the tfjs-node addon with node-gyp'
# The path tfjs-node loads the addon from, as node-pre-gyp resolves it (lib/napi-v<N>).
BINDING="$(cd "$PKG" && node -p "require('@mapbox/node-pre-gyp').find(require('path').resolve('package.json'))")"
NAPI_VERSION="$(basename "$(dirname "$BINDING")")"; NAPI_VERSION="${NAPI_VERSION#napi-v}"
say "node-gyp rebuild ${NODEDIR_ARGS[*]} -> ${BINDING#"$ROOT/"}"
(
  cd "$PKG"
  node "$NODE_GYP" rebuild "${NODEDIR_ARGS[@]}" --jobs=2 \
    --module_name=tfjs_binding --module_path="$(dirname "$BINDING")" --napi_build_version="$NAPI_VERSION" \
    >"$CACHE/node-gyp.log" 2>&1
) || fallback "node-gyp failed; see .cache/native-tf/node-gyp.log"
[[ -f "$BINDING" ]] || fallback "node-gyp did not produce $BINDING"
rm -rf "$PKG/build"

STEP='load the native backend'
native_works || fallback "the addon was built but @tensorflow/tfjs-node does not load"
trap - ERR
say "OK: @tensorflow/tfjs-node uses libtensorflow from tensorflow-cpu $TF_WHEEL_VERSION (PyPI); backend 'tensorflow' is available."
