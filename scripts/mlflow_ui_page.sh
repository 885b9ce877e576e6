#!/usr/bin/env bash
# The MLflow UI over a store, as a browser renders it: start `mlflow server` on 127.0.0.1, open the
# first sweep experiment's runs table in headless Chromium, save its DOM and a screenshot.
#   bash scripts/mlflow_ui_page.sh sqlite:///results/main/mlflow.db page.html page.png [WIDTHxHEIGHT]
# As root it runs in a network namespace of its own (only loopback: neither MLflow nor Chromium
# reaches out); otherwise Chromium's background networking is switched off.
set -euo pipefail
store=$1 dom=$2 png=$3 size=${4:-1600,900}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
mlflow=$(dirname "$py")/mlflow

if [[ -z ${SWEEPER_IN_NETNS:-} && $(id -u) == 0 ]] && command -v unshare >/dev/null; then
    exec env SWEEPER_IN_NETNS=1 unshare -n bash -c 'ip link set lo up && exec bash "$0" "$@"' "$0" "$@"
fi

export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$mlflow" server --backend-store-uri "$store" --host 127.0.0.1 --port "$port" --workers 1 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -f "$log"' EXIT

# Wait for the server, then find the first experiment that holds runs (not MLflow's empty Default).
experiment=$("$py" - "$port" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(180):
    try:
        urllib.request.urlopen(base + "/health", timeout=2).read()
        break
    except OSError:
        time.sleep(0.5)
request = urllib.request.Request(base + "/api/2.0/mlflow/experiments/search", data=b'{"max_results": 100}',
                                 headers={"Content-Type": "application/json"})
experiments = json.load(urllib.request.urlopen(request, timeout=10))["experiments"]
print(next((e["experiment_id"] for e in experiments if e["name"] != "Default"), "0"))
PY
) || { echo "mlflow server did not answer:"; cat "$log"; exit 1; }

url="http://127.0.0.1:$port/#/experiments/$experiment/runs?workflowType=machine_learning"
flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --no-first-run
       --disable-dev-shm-usage --virtual-time-budget=20000 --window-size="$size")
chromium "${flags[@]}" --dump-dom "$url" >"$dom" 2>/dev/null
chromium "${flags[@]}" --screenshot="$png" "$url" >/dev/null 2>&1
echo "$url -> $dom, $png"
