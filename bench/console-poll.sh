#!/usr/bin/env bash
# Polls the admin API the way open console tabs do, to measure ingest with the console
# open (run it beside a load, e.g. bench/ab.sh or hookgate-load) against the same load
# without it. Each "tab" asks, every INTERVAL seconds, what the console's pages ask:
# /api/v1/stats (overview), /api/v1/events?limit=200 (events), /api/v1/rejections?limit=200
# (refused requests) and /api/v1/dead-letters (dead letters), then opens the newest event
# (/api/v1/events/{id}, a read back from the log). Prints how many requests each tab made
# and how many failed. Loopback use only; stops by itself after DURATION seconds.
#
#   HOOKGATE_ADMIN_TOKEN=... bench/console-poll.sh http://127.0.0.1:9090 [TABS] [DURATION] [INTERVAL]
set -euo pipefail
ADMIN=${1:?usage: console-poll.sh ADMIN_URL [TABS] [DURATION_S] [INTERVAL_S]}
TABS=${2:-4} DURATION=${3:-30} INTERVAL=${4:-2}
TOKEN=${HOOKGATE_ADMIN_TOKEN:?set HOOKGATE_ADMIN_TOKEN to the [admin] token}
OUT=$(mktemp -d /tmp/console-poll.XXXX)
trap 'rm -rf "$OUT"' EXIT
AUTH=(-H "Authorization: Bearer $TOKEN")

tab() {
  local n=$1 ok=0 bad=0 end=$((SECONDS + DURATION))
  while [ "$SECONDS" -lt "$end" ]; do
    for path in stats 'events?limit=200' 'rejections?limit=200' dead-letters; do
      if curl -fsS -o "$OUT/$n.json" --max-time 10 "${AUTH[@]}" "$ADMIN/api/v1/$path"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    done
    curl -fsS -o "$OUT/$n.json" --max-time 10 "${AUTH[@]}" "$ADMIN/api/v1/events?limit=1" || true
    id=$(python3 -c 'import json,sys; e=json.load(open(sys.argv[1])).get("events") or [{}]; print(e[0].get("id",""))' "$OUT/$n.json" 2>/dev/null || true)
    if [ -n "$id" ]; then
      if curl -fsS -o /dev/null --max-time 10 "${AUTH[@]}" "$ADMIN/api/v1/events/$id"; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
    fi
    sleep "$INTERVAL"
  done
  echo "tab $n: $ok requests answered, $bad failed"
}

for n in $(seq 1 "$TABS"); do tab "$n" & done
wait
