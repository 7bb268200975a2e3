#!/usr/bin/env bash
# `make loadtest`: start a local `liveroom serve --dev` on a free port, wait for
# /healthz, run the Locust load test headless against it and print Locust's
# summary, then stop the server (whatever happens).
#
#   LOADTEST_USERS        concurrent users (default 200)
#   LOADTEST_SPAWN_RATE   users started per second (default 50)
#   LOADTEST_TIME         run time, Locust syntax: 60s, 5m (default 60s)
#   BIN                   where liveroom and locust are (default .venv/bin)
#
# Extra arguments go to locust (for example --csv out/lt; from make:
# LOADTEST_ARGS="--csv out/lt"). The environment reaches both processes:
# LIVEROOM_ROOM and LIVEROOM_ROOMS steer the locustfile, LIVEROOM_* limits such
# as LIVEROOM_ACTION_RATE the server, and LIVEROOM_JWT_SECRET both (the server
# verifies with it, Locust mints with it). See loadtest/README.md.
# The exit status is Locust's: 1 when any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
USERS=${LOADTEST_USERS:-200}
SPAWN_RATE=${LOADTEST_SPAWN_RATE:-50}
RUN_TIME=${LOADTEST_TIME:-60s}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/liveroom-loadtest.XXXXXX")
SERVER_LOG="$WORK/server.log"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --port 0: the kernel picks a free port, and the server logs the one it bound.
"$BIN/liveroom" serve --dev --host 127.0.0.1 --port 0 --no-demo-room \
    --data-dir "$WORK/data" 2>"$SERVER_LOG" &
SERVER_PID=$!

PORT=
for _ in $(seq 1 150); do
    PORT=$(sed -n 's#.*listening on http://127\.0\.0\.1:\([0-9]*\).*#\1#p' "$SERVER_LOG" | head -n1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$PORT" ]; then
    echo "liveroom serve did not start:" >&2
    cat "$SERVER_LOG" >&2
    exit 1
fi
URL="http://127.0.0.1:$PORT"

"$BIN/python" - "$URL/healthz" <<'EOF'
import sys, time, urllib.request
for _ in range(100):
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"no answer from {sys.argv[1]}")
EOF

echo "liveroom serve on $URL (pid $SERVER_PID); locust: $USERS users, $SPAWN_RATE/s, $RUN_TIME"
status=0
"$BIN/locust" -f loadtest/locustfile.py --headless --only-summary \
    -u "$USERS" -r "$SPAWN_RATE" -t "$RUN_TIME" --host "$URL" "$@" || status=$?
if grep -qE "ERROR|Traceback" "$SERVER_LOG"; then
    echo "--- server log (errors) ---" >&2
    grep -E -A5 "ERROR|Traceback" "$SERVER_LOG" | head -n 40 >&2
fi
exit "$status"
