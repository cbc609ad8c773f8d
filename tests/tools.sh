#!/usr/bin/env bash
# Installs what the test suite needs beyond Python: the project with its test extras in .venv,
# and Debian's prometheus + prometheus-alertmanager (promtool, real Prometheus and Alertmanager
# for tests/deploy) and chromium (the live page is tested in headless Chromium). Idempotent: does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import seedloop, pytest, hypothesis, channelattribution" 2>/dev/null; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
fi

if ! command -v promtool >/dev/null || ! command -v prometheus-alertmanager >/dev/null || ! command -v chromium >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager chromium >/dev/null
  # The packages start system services on install; the tests start their own on free ports.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi
