#!/usr/bin/env bash
# Everything `npm install` cannot do on its own here: the compiled build (dist/), the Temporal
# CLI (embedded dev server), the native TensorFlow backend built from the PyPI wheel (optional:
# falls back to JS), its GPU build where there is a GPU (optional: falls back to the CPU build),
# and Chromium from Debian for the browser test of report.html (optional: that test skips).
#
#   npm run setup                 GPU build only if `nvidia-smi` lists a GPU
#   npm run setup -- --gpu        GPU build anyway (BACKDOOR_AUDIT_GPU=1 does the same)
#   npm run setup -- --no-gpu     never (BACKDOOR_AUDIT_GPU=0)
set -euo pipefail
cd "$(dirname "$0")/.."

GPU="${BACKDOOR_AUDIT_GPU:-auto}"
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    --no-gpu) GPU=0 ;;
    *) echo "setup: unknown argument $arg (use --gpu or --no-gpu)" >&2; exit 2 ;;
  esac
done
if [[ "$GPU" == auto ]]; then
  GPU=0
  if command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    echo "setup: nvidia-smi lists $(nvidia-smi -L | grep -c '^GPU ') GPU(s): building the GPU backend too (--no-gpu skips it)"
    GPU=1
  fi
fi

# The compiled CLI and the prebuilt workflow bundle (dist/): the launcher runs them while they
# match the sources, which saves seconds at every start (scripts/build.ts).
npm run build --silent
bash scripts/setup-temporal.sh
# The CPU build always: it is the tested default, and the fallback if the GPU build fails.
bash scripts/install-native-tf.sh
# Without a GPU (and without --gpu) nothing of the GPU build is downloaded.
if [[ "$GPU" == 1 ]]; then
  bash scripts/install-native-tf.sh --gpu
fi
bash scripts/setup-chromium.sh
