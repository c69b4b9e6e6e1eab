#!/usr/bin/env bash
# Every test, including the ones that need real tools and servers. Installs and starts what they need.
# Used verbatim by .ci/run. Safe to run repeatedly on a developer machine.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cargo's target directory lives outside the clone so CI and repeated runs reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/medfed-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }

need_apt=()
command -v plink1.9 >/dev/null 2>&1 || need_apt+=(plink1.9)
command -v plink2 >/dev/null 2>&1 || need_apt+=(plink2)
command -v bcftools >/dev/null 2>&1 || need_apt+=(bcftools)
mqtt_up() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
if ! pg_up && ! command -v pg_ctlcluster >/dev/null 2>&1; then need_apt+=(postgresql); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 with trust auth and a database `test` (the hub's second backend).
if ! pg_up; then
  echo "starting PostgreSQL"
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1{print $2}')
  if [ -z "$cluster" ]; then $SUDO pg_createcluster "$ver" main >/dev/null; cluster=main; fi
  conf="/etc/postgresql/$ver/$cluster"
  $SUDO sed -i -E 's/^(host|local)(\s+all\s+all.*)\s(peer|scram-sha-256|md5)$/\1\2 trust/' "$conf/pg_hba.conf"
  $SUDO pg_ctlcluster "$ver" "$cluster" start
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -d postgres -c 'CREATE DATABASE test' >/dev/null 2>&1 || \
    $SUDO -u postgres psql -c 'CREATE DATABASE test' >/dev/null
fi

# Mosquitto on 127.0.0.1:1883 (the in-car tests' broker; one test also starts private ones).
if ! mqtt_up; then
  echo "starting mosquitto"
  mq=/usr/sbin/mosquitto; [ -x "$mq" ] || mq=$(command -v mosquitto)
  conf=$(mktemp); printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' > "$conf"
  "$mq" -d -c "$conf"
  for _ in $(seq 1 30); do mqtt_up && break; sleep 1; done
fi

# DuckDB, numpy and statsmodels: the independent computations the tests check pooled answers against
# (DuckDB SQL on the pooled Parquet; statsmodels' Kaplan-Meier and Poisson regression).
python3 -c 'import duckdb, statsmodels' 2>/dev/null || python3 -m pip install -q duckdb statsmodels

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo nextest run --workspace --no-fail-fast --failure-output final
