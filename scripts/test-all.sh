#!/usr/bin/env bash
# Every test, including the ones that need real tools and servers. Installs and starts what they need.
# Used verbatim by .ci/run. Safe to run repeatedly on a developer machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cargo's target directory lives outside the clone so CI and repeated runs reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medfed-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

need_apt=()
command -v plink1.9 >/dev/null 2>&1 || need_apt+=(plink1.9)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --no-fail-fast --failure-output final
