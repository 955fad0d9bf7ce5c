#!/usr/bin/env bash
# The install and start steps of deploy/Dockerfile, run as a script without Docker:
#   1. a fresh venv; torch (pinned, CPU) first, then `.[server,postgres,milvus]` built from the same
#      files the Dockerfile COPYs;
#   2. `convergent serve` with the image's settings from CONVERGENT_* variables (but bound to
#      loopback on a free port, with a temporary data dir);
#   3. `convergent health` (the image's HEALTHCHECK) until SERVING; one model registered;
#   4. SIGTERM (what `docker stop` sends): exit status 0, database file in the data dir.
# Prints PASS or FAIL (exit 0 / 1). Usage: deploy/smoke.sh   [env PYTHON=python3.11 KEEP=1]
#
# torch comes from the pip configuration of this machine (a local CPU wheel / index); the
# Dockerfile alone names the CPU download index. Keep TORCH_VERSION and SOURCES in step with
# the Dockerfile (tests/packaging/test_deploy.py checks both).
set -euo pipefail

TORCH_VERSION="2.13.0"
SOURCES="pyproject.toml README.md proto server client"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/convergent-smoke.XXXXXX")"
SERVER_PID=""
START=$SECONDS

step() { printf '[smoke %3ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() {
    step "FAIL: $*"
    if [[ -f "$WORK/serve.log" ]]; then echo "--- server log (tail)"; tail -n 40 "$WORK/serve.log"; fi
    exit 1
}
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill -KILL "$SERVER_PID" 2>/dev/null || true; fi
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi
}
trap cleanup EXIT

step "fresh venv in $WORK ($("$PYTHON" --version 2>&1))"
"$PYTHON" -m venv "$WORK/venv" || fail "python -m venv"
VENV_BIN="$WORK/venv/bin"
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "pip install torch==$TORCH_VERSION"
"$VENV_BIN/pip" install -q "torch==$TORCH_VERSION" || fail "installing torch"

step "pip install .[server,postgres,milvus] (from a copy of: $SOURCES)"
mkdir -p "$WORK/src"
for source in $SOURCES; do cp -R "$REPO/$source" "$WORK/src/" || fail "copying $source"; done
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +
"$VENV_BIN/pip" install -q "$WORK/src[server,postgres,milvus]" || fail "installing .[server,postgres,milvus]"
"$VENV_BIN/python" -c "import torch, sys; sys.exit(0 if not torch.cuda.is_available() else 1)" \
    || fail "torch is not the CPU build"

step "convergent serve (env as in the image: CONVERGENT_DATA_DIR, CONVERGENT_HOST)"
mkdir -p "$WORK/data"
CONVERGENT_HOST=0.0.0.0 CONVERGENT_DATA_DIR="$WORK/data" \
    "$VENV_BIN/convergent" serve --host 127.0.0.1 --port 0 >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVER_PID=$!
ADDRESS=""
for _ in $(seq 1 600); do   # 60 s
    ADDRESS="$(sed -n 's/.*listening on \([^ "]*\).*/\1/p' "$WORK/serve.log" | head -n 1)"
    [[ -n "$ADDRESS" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited before listening"
    sleep 0.1
done
[[ -n "$ADDRESS" ]] || fail "no 'listening on' line within 60 s"
step "listening on $ADDRESS"

STATUS=""
for _ in $(seq 1 120); do   # 60 s
    STATUS="$("$VENV_BIN/convergent" health --address "$ADDRESS" 2>/dev/null || true)"
    [[ "$STATUS" == "SERVING" ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server exited before SERVING"
    sleep 0.5
done
[[ "$STATUS" == "SERVING" ]] || fail "health never reported SERVING (last: '$STATUS')"
step "health: SERVING"

"$VENV_BIN/convergent" models register smoke --dim 4 --address "$ADDRESS" >/dev/null \
    || fail "registering a model"
[[ -f "$WORK/data/convergent.sqlite3" ]] || fail "no database in CONVERGENT_DATA_DIR"

step "SIGTERM"
kill -TERM "$SERVER_PID"
set +e
wait "$SERVER_PID"
RC=$?
set -e
SERVER_PID=""
[[ "$RC" == 0 ]] || fail "server exited with status $RC after SIGTERM"
grep -q "stopped" "$WORK/serve.log" || fail "no 'stopped' line in the server log"
step "PASS: installed, served, healthy, stopped cleanly (exit 0) in $((SECONDS - START)) s"
