-- bench/wrk/replay.lua: wrk replays a corpus of distinct pre-signed requests written by
-- `hookgate-load --write-corpus FILE` (format: bench/src/replay.rs). Driven by
-- `hookgate-load --wrk` (bench/run.sh), which reads what done() prints. Environment:
--   HG_CORPUS  the corpus file (thread 0); thread t > 0 reads HG_CORPUS.t (its own slice)
--   HG_START   byte offset to start at (0: the first record), e.g. where a warm-up ended
--   HG_IDS     if set: write "A <id>" / "D <id>" for every 200 answer (accepted /
--              duplicate) to this file, for the Kafka read-back
-- Each record is sent once. A thread that reaches the end of its file starts over and
-- counts a wrap: the run is then refused by hookgate-load (it would measure dedupe hits).

local threads, nthreads = {}, 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("HG_CORPUS")
  assert(path, "HG_CORPUS is not set")
  if tid > 0 then path = path .. "." .. tid end
  f = assert(io.open(path, "rb"))
  f:setvbuf("full", 1048576)
  local head = f:read("*l")
  assert(head and head:sub(1, 17) == "hookgate-corpus 1", "not a hookgate corpus: " .. path)
  base = f:seek()
  start = tonumber(os.getenv("HG_START") or "0")
  if start < base then start = base end
  f:seek("set", start)
  off = start
  sent, fresh, wrapped = 0, 0, 0
  accepted, dups = 0, 0
  status = {}
  keep = os.getenv("HG_IDS") ~= nil
  ids = {}
  -- wrk calls request() once on thread 0 before the clock starts, to check the request
  -- it returns; that one is never sent, so it must not use up a record.
  probe = (tid == 0)
end

local function take()
  local h = f:read(12)
  if h == nil or #h < 12 then
    wrapped = wrapped + 1
    f:seek("set", base)
    off = base
    h = f:read(12)
  end
  local len = tonumber(h:sub(3, 11))
  local req = f:read(len)
  off = off + 12 + len
  return h:byte(1), req
end

function request()
  if probe then
    probe = false
    local at, o, w = f:seek(), off, wrapped
    local _, req = take()
    f:seek("set", at)
    off, wrapped = o, w
    return req
  end
  local kind, req = take()
  sent = sent + 1
  if kind == 78 then fresh = fresh + 1 end -- 'N': a delivery id not sent before
  return req
end

function response(st, headers, body)
  status[st] = (status[st] or 0) + 1
  if st == 200 then
    local dup = body:find('"duplicate":true', 1, true) ~= nil
    if dup then dups = dups + 1 else accepted = accepted + 1 end
    if keep then
      local id = body:match('"id":"(%w+)"')
      if id then ids[#ids + 1] = (dup and "D " or "A ") .. id end
    end
  end
end

function done(summary, latency, requests)
  io.write("DONE\n")
  io.flush()
  local t = { sent = 0, fresh = 0, wrapped = 0, accepted = 0, dups = 0 }
  local st, stop = {}, 0
  local out = os.getenv("HG_IDS")
  local idf = out and assert(io.open(out, "w"))
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + (th:get(k) or 0) end
    for code, n in pairs(th:get("status") or {}) do st[code] = (st[code] or 0) + n end
    if th:get("off") > stop then stop = th:get("off") end
    if idf then
      for _, line in ipairs(th:get("ids") or {}) do idf:write(line, "\n") end
    end
  end
  if idf then idf:close() end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d sent=%d fresh=%d wrapped=%d end=%d accepted=%d duplicates=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, t.sent, t.fresh, t.wrapped, stop, t.accepted, t.dups,
    e.connect, e.read, e.write, e.timeout))
  io.write("STATUS")
  for code, n in pairs(st) do io.write(string.format(" %d=%d", code, n)) end
  io.write("\n")
  io.write(string.format("LATENCY p50=%d p90=%d p99=%d p999=%d max=%d mean=%.1f\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
  io.flush()
end
