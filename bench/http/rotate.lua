-- wrk script for bench/http/run.js: each connection's requests rotate over the
-- URL paths listed (one a line) in the file given after `--`. Requests are
-- formatted once in init() so the client spends its CPU on I/O, not on Lua.
-- done() prints one machine-readable JSON line after the marker @@WRKJSON@@.

local reqs = {}
local n = 0
local idx = 0

function init(args)
  local file = args[1]
  if file == nil then
    error("rotate.lua: pass the paths file after --")
  end
  for line in io.lines(file) do
    if line ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", line)
    end
  end
  if n == 0 then
    error("rotate.lua: no paths in " .. file)
  end
  -- Threads start at different offsets so they do not walk in lockstep.
  idx = math.random(0, n - 1)
end

function request()
  idx = idx % n + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write("@@WRKJSON@@")
  io.write(string.format(
    '{"durationUs":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latencyUs":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
