#!/usr/bin/env bash
# Installs what the test suite needs beyond Python, and only what is missing (idempotent: a second
# run does nothing and takes a second or two):
# - the project with its test extras in .venv (reinstalled when pyproject.toml changed);
# - Debian's prometheus + prometheus-alertmanager (promtool, real Prometheus and Alertmanager for
#   tests/deploy), chromium (the live page in headless Chromium), tmux (the demo's live view in an
#   80x24 terminal), redis-server (the `local` tier and Redis Cluster tests), and Java 17 + Maven
#   where they are missing;
# - Apache Kafka's jars, resolved once by Maven into ~/.cache/seedloop (seedloop/apache_kafka.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.seedloop-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] \
   || ! .venv/bin/python -c "import seedloop, pytest, hypothesis, ChannelAttribution, testcontainers" >/dev/null 2>&1; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
command -v chromium >/dev/null || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v mvn >/dev/null || missing+=(maven)
command -v tmux >/dev/null || missing+=(tmux)
if ! command -v java >/dev/null || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|[2-9][0-9])'; then
  missing+=(openjdk-17-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  echo "tools.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packages start system services on install; the tests start their own on free ports.
  for svc in prometheus prometheus-alertmanager prometheus-node-exporter redis-server; do
    $SUDO service "$svc" stop >/dev/null 2>&1 || true
  done
fi

# Apache Kafka's jars (a no-op once cached); a failure names the artifact Maven could not resolve.
.venv/bin/python -c "from seedloop.apache_kafka import resolve_jars; print('tools.sh: Apache Kafka jars in', resolve_jars())"
