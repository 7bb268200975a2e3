#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing.
# `system-deps.sh venv` installs just what `python3 -m venv` needs, `node` node and npm,
# `nchan` nginx with the nchan module (the fan-out benchmark's `--peer nchan`),
# `build PYTHON` a C compiler and PYTHON's headers (the send loop in C, edge/_sendloop.c).
# Optional packages may fail to install without failing the script: the tests that
# need them are skipped (with the reason) when they are absent.
set -euo pipefail
need=()
optional=()
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
if [ "${1:-}" = nchan ]; then
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
  [ -e "$nchan_module" ] || need+=(libnginx-mod-nchan)
elif [ "${1:-}" = build ]; then
  command -v gcc >/dev/null 2>&1 || need+=(gcc)
  py="${2:-python3}"
  "$py" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || need+=(python3-dev)
elif [ "${1:-}" = venv ]; then
  need+=(python3-venv)
elif [ "${1:-}" = node ]; then
  # The JavaScript SDK's tests (clients/js, `make js`): node (18 or later) and npm.
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
elif [ "${1:-}" = llm ]; then
  # Compiling llama-cpp-python (the characters' embedded model).
  command -v cmake >/dev/null 2>&1 || need+=(cmake)
  command -v g++ >/dev/null 2>&1 || need+=(g++)
else
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
  # Optional: nchan, the peer of loadtest/bench_fanout.py (`--peer nchan`);
  # tests/integration/test_bench_smoke.py skips its nchan run without it.
  [ -e "$nchan_module" ] || optional+=(libnginx-mod-nchan)
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
  # The distributed stores' integration tests start their own servers:
  # PostgreSQL (initdb + postgres, tests/pgserver.py) and Redis standalone and
  # Cluster (tests/redisserver.py; redis-cli joins the cluster); the agents'
  # Redis quota store test starts its own redis-server too.
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 \
    || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
  # The JavaScript SDK's tests (clients/js).
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
[ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq || [ ${#need[@]} -eq 0 ]  # optional only: go on offline
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  echo "installing optional Debian packages: ${optional[*]}" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${optional[@]}" >/dev/null \
    || echo "optional packages not installed (${optional[*]}): their tests will be skipped" >&2
fi
