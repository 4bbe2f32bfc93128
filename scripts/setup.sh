#!/usr/bin/env bash
# Everything `npm install` cannot do on its own here: the compiled build (dist/), the Temporal
# CLI (embedded dev server), the native TensorFlow backend built from the PyPI wheel (optional:
# falls back to JS), and Chromium from Debian for the browser test of report.html (optional:
# that test skips).
set -euo pipefail
cd "$(dirname "$0")/.."
# The compiled CLI and the prebuilt workflow bundle (dist/): the launcher runs them while they
# match the sources, which saves seconds at every start (scripts/build.ts).
npm run build --silent
bash scripts/setup-temporal.sh
bash scripts/install-native-tf.sh
bash scripts/setup-chromium.sh
