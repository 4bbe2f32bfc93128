#!/usr/bin/env bash
# Chromium for the browser test of report.html (test/report/browser.test.ts), from Debian. Optional:
# without it that test skips and says why. Nothing is downloaded when a Chromium is already there.
set -uo pipefail
for b in "${CHROMIUM_PATH:-}" chromium chromium-browser google-chrome; do
  if [ -n "$b" ] && command -v "$b" >/dev/null 2>&1; then
    echo "chromium: using $(command -v "$b")"
    exit 0
  fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing the Debian package (browser test of report.html)"
  if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/tmp/backdoor-audit-chromium.log 2>&1 ||
    { apt-get update >>/tmp/backdoor-audit-chromium.log 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>/tmp/backdoor-audit-chromium.log 2>&1; }; then
    echo "chromium: installed $(command -v chromium)"
    exit 0
  fi
  echo "chromium: apt-get install failed (log: /tmp/backdoor-audit-chromium.log); the browser test will skip"
else
  echo "chromium: not found and cannot install it here (needs root and apt-get); the browser test will skip"
fi
exit 0
