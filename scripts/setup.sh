#!/usr/bin/env bash
# Everything `npm install` cannot do on its own here: the Temporal CLI (embedded dev server)
# and the native TensorFlow backend built from the PyPI wheel (optional: falls back to JS).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-temporal.sh
bash scripts/install-native-tf.sh
