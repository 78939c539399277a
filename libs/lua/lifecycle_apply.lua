-- Applies buffered job-lifecycle updates in order (libs.middleware.lifecycle).
-- ARGV: the prefixes of job hashes, seq counters, per-minute stats, totals, taken counters and durations lists,
-- the key separator, the job TTL, the stats TTL, the durations kept; then records of 11 fields: kind
-- (E waiting | D delayed | S started | T taken only | F finished), queue, message id, actor, time, then per
-- kind — D: eta; S: worker; F: outcome, duration ms, failures, error type, error text, '1' when the attempt
-- failed (not a deferral).
local job_prefix, seq_prefix, stats_prefix, totals_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local taken_prefix, durations_prefix, sep = ARGV[5], ARGV[6], ARGV[7]
local job_ttl, stats_ttl, keep = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local states = {succeeded="succeeded", retry="failed", failed="failed", dead="dead", deferred="deferred"}
local jobs, order, counters, expiring, taken, durations = {}, {}, {}, {}, {}, {}
local function set(mid, ...)
  local job = jobs[mid]
  if not job then job = {}; jobs[mid] = job; order[#order + 1] = mid end
  local pairs_ = {...}
  for k = 1, #pairs_, 2 do job[pairs_[k]] = pairs_[k + 1] end
end
-- Records from several processes (a producer's buffer, a worker's) may arrive out of order: a job's fields
-- only move forward in time ("updated_at"); its counters always count.
local latest = {}
local function fresh(mid, at)
  local known = latest[mid]
  if known == nil then
    known = tonumber(redis.call("hget", job_prefix .. mid, "updated_at")) or 0
  end
  local now = tonumber(at)
  if now < known then latest[mid] = known; return false end
  latest[mid] = now
  return true
end
local function count(key, name, by)
  local c = counters[key]
  if not c then c = {}; counters[key] = c end
  c[name] = (c[name] or 0) + by
end
for i = 11, #ARGV, 11 do
  local kind, queue, mid, actor, at = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local current = fresh(mid, at)
  if kind == "E" then
    local seq = redis.call("incr", seq_prefix .. queue)
    if current then set(mid, "state", "waiting", "queue", queue, "actor", actor, "enqueued_at", at, "seq", seq,
        "eta", false, "next_retry_at", false) end
  elseif kind == "D" then
    if current then set(mid, "state", "delayed", "queue", queue, "actor", actor, "enqueued_at", at, "eta", ARGV[i+5],
        "next_retry_at", ARGV[i+5], "seq", false) end
  elseif kind == "S" or kind == "T" then
    taken[queue] = (taken[queue] or 0) + 1
    if kind == "S" and current then
      set(mid, "state", "running", "queue", queue, "actor", actor, "started_at", at, "worker", ARGV[i+5],
          "finished_at", false, "duration_ms", false, "eta", false, "next_retry_at", false)
    end
  elseif kind == "F" then
    local outcome, duration, failures = ARGV[i+5], ARGV[i+6], ARGV[i+7]
    if current then
      set(mid, "state", states[outcome] or outcome, "finished_at", at)
      if duration ~= "" then set(mid, "duration_ms", duration) end
      if failures ~= "" then set(mid, "failures", failures, "last_error_type", ARGV[i+8], "last_error", ARGV[i+9]) end
      if outcome == "succeeded" or outcome == "dead" or outcome == "skipped" then
        set(mid, "eta", false, "next_retry_at", false)
      end
    end
    local minute = stats_prefix .. queue .. sep .. math.floor(tonumber(at) / 60)
    expiring[minute] = true
    local names = {}
    if outcome == "succeeded" then names = {"completed"}
    elseif outcome == "deferred" then names = {"deferred"}
    elseif outcome == "dead" then names = {"dead"} end
    if ARGV[i+10] == "1" then names[#names + 1] = "failed" end
    for _, name in ipairs(names) do
      count(minute, name, 1)
      count(totals_prefix .. queue, name, 1)
    end
    if outcome == "succeeded" and duration ~= "" then
      count(minute, "duration_ms_sum", tonumber(duration))
      local list = durations[queue]
      if not list then list = {}; durations[queue] = list end
      list[#list + 1] = duration
    end
  end
end
for _, mid in ipairs(order) do
  jobs[mid]["updated_at"] = tostring(latest[mid])
  local key, sets, dels = job_prefix .. mid, {}, {}
  for name, value in pairs(jobs[mid]) do
    if value == false then dels[#dels + 1] = name else sets[#sets + 1] = name; sets[#sets + 1] = value end
  end
  if #dels > 0 then redis.call("hdel", key, unpack(dels)) end
  if #sets > 0 then redis.call("hset", key, unpack(sets)) end
  redis.call("expire", key, job_ttl)
end
for key, names in pairs(counters) do
  for name, value in pairs(names) do
    if name == "duration_ms_sum" then redis.call("hincrbyfloat", key, name, value)
    else redis.call("hincrby", key, name, value) end
  end
  if expiring[key] then redis.call("expire", key, stats_ttl) end
end
for queue, n in pairs(taken) do redis.call("incrby", taken_prefix .. queue, n) end
for queue, list in pairs(durations) do
  local key = durations_prefix .. queue
  for k = 1, #list, 1000 do redis.call("lpush", key, unpack(list, k, math.min(k + 999, #list))) end
  redis.call("ltrim", key, 0, keep - 1)
end
return 0
