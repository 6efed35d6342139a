#!/usr/bin/env python3
"""Polls the admin API as TABS open console tabs do, from ONE process with keep-alive
connections (bench/console-poll.sh starts a curl and a python per call: on a 2-core box
those processes cost far more CPU than the server spends answering, and the A/B then
measures the poller, not the console). Each tab, every INTERVAL seconds: /api/v1/stats,
/api/v1/events?limit=200, /api/v1/rejections?limit=200, /api/v1/dead-letters, then opens the
newest event (/api/v1/events/{id}: a read back from the log). Prints requests answered and
failed per tab. Loopback only; stops after DURATION seconds.

    HOOKGATE_ADMIN_TOKEN=... bench/console-poll.py 127.0.0.1:9090 [TABS] [DURATION] [INTERVAL]
"""
import http.client, json, os, sys, threading, time

host, port = sys.argv[1].replace("http://", "").rsplit(":", 1)
tabs = int(sys.argv[2]) if len(sys.argv) > 2 else 4
duration = float(sys.argv[3]) if len(sys.argv) > 3 else 30
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 2
auth = {"Authorization": "Bearer " + os.environ["HOOKGATE_ADMIN_TOKEN"]}
results = {}

def tab(n):
    ok = bad = 0
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        newest = None
        for path in ("stats", "events?limit=200", "rejections?limit=200", "dead-letters"):
            try:
                conn.request("GET", "/api/v1/" + path, headers=auth)
                r = conn.getresponse()
                body = r.read()
                if r.status == 200:
                    ok += 1
                    if path.startswith("events"):
                        ev = json.loads(body).get("events") or []
                        newest = ev[0].get("id") if ev else None
                else:
                    bad += 1
            except Exception:
                bad += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
        if newest:
            try:
                conn.request("GET", "/api/v1/events/" + newest, headers=auth)
                r = conn.getresponse()
                r.read()
                ok, bad = (ok + 1, bad) if r.status == 200 else (ok, bad + 1)
            except Exception:
                bad += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
        time.sleep(interval)
    results[n] = (ok, bad)

threads = [threading.Thread(target=tab, args=(n,)) for n in range(1, tabs + 1)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for n in sorted(results):
    print(f"tab {n}: {results[n][0]} requests answered, {results[n][1]} failed")
