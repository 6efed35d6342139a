# Writes a wrk Lua script for bench/cpu-ab.sh: 64 pre-signed ~1.1 KB GitHub push bodies
# (secret hookgate-bench-secret), each request under a fresh delivery id (a per-run prefix
# plus a counter; wrk -t1, so ids never repeat within a run). The bench configs set
# dedupe_body = false, so re-using a body under a new id is a new event, not a replay.
#   python3 bench/wrk-push.py OUT.lua
import hmac, hashlib, json, random, sys
secret = b"hookgate-bench-secret"
bodies = []
for i in range(64):
    b = {"ref": "refs/heads/main", "before": "%040x" % random.getrandbits(160), "after": "%040x" % random.getrandbits(160),
         "repository": {"id": 1000 + i, "full_name": "acme/repo-%d" % i, "private": False},
         "pusher": {"name": "dev%d" % i, "email": "dev%d@example.com" % i},
         "commits": [{"id": "%040x" % random.getrandbits(160), "message": "change %d " % i + "x" * 600,
                      "author": {"name": "dev", "email": "dev@example.com"}}]}
    s = json.dumps(b, separators=(",", ":"))
    s = s + " " * max(0, 1100 - len(s))
    sig = "sha256=" + hmac.new(secret, s.encode(), hashlib.sha256).hexdigest()
    bodies.append((s, sig))
def lq(s): return "[==[" + s + "]==]"
out = ["local bodies = {"] + ["  {%s, %s}," % (lq(b), lq(g)) for b, g in bodies] + ["}"]
out.append("""
math.randomseed(os.time())
local prefix = string.format("%08x", math.random(0, 0x7fffffff))
local n = 0
request = function()
  n = n + 1
  local b = bodies[(n % #bodies) + 1]
  return wrk.format("POST", "/hooks/github", {
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-GitHub-Delivery"] = prefix .. "-" .. n,
    ["X-Hub-Signature-256"] = b[2],
  }, b[1])
end
""")
open(sys.argv[1], "w").write("\n".join(out))
