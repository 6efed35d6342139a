#!/usr/bin/env bash
# HTTPS vs plaintext on the public listener: the same closed-loop load (wrk, CONNS
# keep-alive connections, DURATION each) against hookgate with the spool config
# (bench/configs/spool.toml), alternating plain and TLS runs for PAIRS pairs in one go. Each
# run gets a fresh hookgate and spool. wrk replays distinct pre-signed GitHub pushes (one
# body, signature and delivery id per request; a corpus large enough that nothing wraps, and
# the script says so if it did). Prints req/s, p99 and hookgate's CPU per answered request
# (utime+stime from /proc/PID/stat over the run, divided by requests) per run, then medians.
#
#   bench/tls-ab.sh [PAIRS]        (env: DURATION=5s CONNS=64 THREADS=2 CORPUS=400000)
# Loopback only; stops by itself. Needs wrk (apt-get install -y wrk), openssl, python3 and a
# release hookgate (cargo build --release --workspace).
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-3}
HOOKGATE=${HOOKGATE:-target/release/hookgate}
DURATION=${DURATION:-5s} CONNS=${CONNS:-64} THREADS=${THREADS:-2} CORPUS=${CORPUS:-400000}
SECRET=hookgate-bench-secret # bench/configs/spool.toml's github secret
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
OUT=$(mktemp -d /tmp/tls-ab.XXXX)
TICK=$(getconf CLK_TCK)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done' EXIT

# A CA and a server certificate for 127.0.0.1 (ECDSA P-256, what most ACME setups issue).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=127.0.0.1 \
  -keyout "$OUT/key.pem" -out "$OUT/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$OUT/ext.cnf"
openssl x509 -req -in "$OUT/server.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial -days 2 \
  -extfile "$OUT/ext.cnf" -out "$OUT/cert.pem" 2>/dev/null
cp bench/configs/spool.toml "$OUT/plain.toml"
python3 - bench/configs/spool.toml "$OUT/tls.toml" "$OUT" <<'PY'
import sys
src, dst, out = sys.argv[1:]
s = open(src).read()
tls = f'[server.tls]\ncert = "{out}/cert.pem"\nkey = "{out}/key.pem"\n\n'
open(dst, "w").write(s.replace("\n[spool]", "\n" + tls + "[spool]", 1))
PY
# The corpus: one line per request, "delivery-id signature body", distinct bodies.
python3 - "$OUT/corpus.txt" "$CORPUS" "$SECRET" <<'PY'
import hashlib, hmac, sys, uuid
path, n, secret = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
with open(path, "w") as f:
    for i in range(n):
        body = ('{"ref":"refs/heads/main","after":"%040x","repository":{"full_name":"bench/repo"},"n":%d}' % (i * 2654435761, i))
        sig = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
        f.write(f"{uuid.UUID(int=i + 1)} sha256={sig} {body}\n")
PY

cat >"$OUT/replay.lua" <<'LUA'
-- Thread t of n replays lines t, t+n, t+2n, ... of the corpus; wraps only if it runs out.
local threads, counter = {}, 0
function setup(thread)
  thread:set("tid", counter); counter = counter + 1
  table.insert(threads, thread)
end
function init(args)
  local n = tonumber(os.getenv("WRK_THREADS"))
  reqs, i, wrapped = {}, 0, 0
  local k = 0
  for line in io.lines(os.getenv("WRK_CORPUS")) do
    if k % n == tid then
      local id, sig, body = line:match("^(%S+) (%S+) (.*)$")
      reqs[#reqs + 1] = wrk.format("POST", "/hooks/github", {
        ["Content-Type"] = "application/json", ["X-GitHub-Event"] = "push",
        ["X-GitHub-Delivery"] = id, ["X-Hub-Signature-256"] = sig }, body)
    end
    k = k + 1
  end
  nreqs = #reqs
end
function request()
  i = i + 1
  if i > #reqs then i = 1; wrapped = wrapped + 1 end
  sent = i + wrapped * #reqs
  return reqs[i]
end
function done(summary, latency, requests)
  local distinct, wraps = 0, 0
  for _, t in ipairs(threads) do
    distinct = distinct + math.min(t:get("sent") or 0, t:get("nreqs") or 0)
    wraps = wraps + (t:get("wrapped") or 0)
  end
  io.write(string.format("RESULT requests=%d duration_us=%d p99_us=%d p50_us=%d non2xx=%d errors=%d distinct=%d wrapped=%d\n",
    summary.requests, summary.duration, latency:percentile(99), latency:percentile(50),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    distinct, wraps))
end
LUA

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() {
  local label=$1 round=$2 scheme=$3 cfg=$4
  HOOKGATE_BENCH_SPOOL="$OUT/spool-$label-$round" "$HOOKGATE" serve --config "$cfg" \
    >"$OUT/$label-$round.stdout" 2>"$OUT/$label-$round.stderr" &
  local hg=$!; PIDS+=("$hg")
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$OUT/$label-$round.stdout" | head -n1)
    [ -n "$addr" ] && break; sleep 0.1
  done
  local t0; t0=$(cpu_ticks "$hg")
  WRK_CORPUS="$OUT/corpus.txt" WRK_THREADS=$THREADS wrk -t "$THREADS" -c "$CONNS" -d "$DURATION" --timeout 10s \
    -s "$OUT/replay.lua" "$scheme://$addr/hooks/github" >"$OUT/$label-$round.txt" 2>&1
  local t1; t1=$(cpu_ticks "$hg")
  kill -TERM "$hg"; wait "$hg" 2>/dev/null || true
  python3 - "$OUT/$label-$round.txt" "$((t1 - t0))" "$TICK" "$label" "$round" <<'PY' | tee -a "$OUT/summary.txt"
import re, sys
path, ticks, tck, label, rnd = sys.argv[1:]
line = next(l for l in open(path) if l.startswith("RESULT "))
r = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
rps = r["requests"] / (r["duration_us"] / 1e6)
us = int(ticks) / int(tck) * 1e6 / max(r["requests"], 1)
print(f"{label} r{rnd}: {rps:,.0f} req/s, p50 {r['p50_us']/1000:.2f} ms, p99 {r['p99_us']/1000:.2f} ms, "
      f"{us:.1f} us hookgate CPU per request, {r['requests']} requests, {r['distinct']} distinct delivery ids, "
      f"wrapped {r['wrapped']}, non-2xx {r['non2xx']}, socket errors {r['errors']}")
PY
}

echo "machine: $(nproc) cores, $(uname -r); hookgate $("$HOOKGATE" --version); $(wrk --version 2>&1 | head -n1 | cut -d' ' -f1-2)"
echo "load: wrk -t $THREADS -c $CONNS -d $DURATION, $PAIRS pairs, corpus $CORPUS distinct pushes; output in $OUT"
for round in $(seq 1 "$PAIRS"); do
  run plain "$round" http "$OUT/plain.toml"
  run tls "$round" https "$OUT/tls.toml"
done
python3 - "$OUT/summary.txt" <<'PY'
import re, statistics, sys
rows = {}
for l in open(sys.argv[1]):
    label = l.split()[0]
    rps = float(re.search(r": ([\d,]+) req/s", l).group(1).replace(",", ""))
    p99 = float(re.search(r"p99 ([\d.]+) ms", l).group(1))
    cpu = float(re.search(r"([\d.]+) us hookgate CPU", l).group(1))
    rows.setdefault(label, []).append((rps, p99, cpu))
med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in rows.items()}
for k, (rps, p99, cpu) in med.items():
    print(f"median {k}: {rps:,.0f} req/s, p99 {p99:.2f} ms, {cpu:.1f} us CPU/request")
p, t = med["plain"], med["tls"]
print(f"TLS/plain: req/s {t[0]/p[0]:.2f}x, p99 {t[1]/p[1]:.2f}x, CPU/request {t[2]/p[2]:.2f}x")
PY
