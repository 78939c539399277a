-- Reads every queue's numbers inside Redis in one call (libs.ops.stats) and returns a compact array per queue, so
-- Python parses a few hundred integers instead of thousands of replies.
-- ARGV: the heartbeat set, the ack-set prefix, the job-hash prefix, the first minute, the number of minutes; then
-- per queue 9 keys: its ack-set suffix, its list, its payload hash, its delay queue's payload hash, its dead set,
-- its per-minute stats prefix, its durations list, its totals hash and its lanes' backlog counter.
-- Per queue: waiting, delayed, broker dead, in flight (the ack sets of the heartbeating workers), completed per
-- minute, failed per minute, duration sum, p95 of the recent durations, totals (completed, failed, dead), when
-- the oldest waiting job entered the queue (its lifecycle hash, else its message timestamp), lanes' backlog.
local heartbeats, acks, jobs, first, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local workers = redis.call("zrange", heartbeats, 0, -1)
local out = {}
for qi = 6, #ARGV, 9 do
  local acks_suffix, list, msgs, delayed, dead = ARGV[qi], ARGV[qi + 1], ARGV[qi + 2], ARGV[qi + 3], ARGV[qi + 4]
  local stats, durations_key, totals_key, backlog = ARGV[qi + 5], ARGV[qi + 6], ARGV[qi + 7], ARGV[qi + 8]
  local inflight = 0
  for _, w in ipairs(workers) do
    inflight = inflight + redis.call("scard", acks .. w .. acks_suffix)
  end
  local completed, failed, sum = {}, {}, 0
  for m = first, first + n - 1 do
    local v = redis.call("hmget", stats .. m, "completed", "failed", "duration_ms_sum")
    completed[#completed + 1] = tonumber(v[1]) or 0
    failed[#failed + 1] = tonumber(v[2]) or 0
    sum = sum + (tonumber(v[3]) or 0)
  end
  local p95 = false
  local durations = redis.call("lrange", durations_key, 0, -1)
  if #durations > 0 then
    local values = {}
    for i, d in ipairs(durations) do values[i] = tonumber(d) or 0 end
    table.sort(values)
    p95 = tostring(values[math.max(1, math.ceil(0.95 * #values))])
  end
  local totals = redis.call("hmget", totals_key, "completed", "failed", "dead")
  local oldest = false
  local head = redis.call("lindex", list, 0)
  if head then
    local payload = redis.call("hget", msgs, head)
    if payload then
      local ok, message = pcall(cjson.decode, payload)
      if ok and type(message) == "table" then
        oldest = redis.call("hget", jobs .. tostring(message.message_id), "enqueued_at")
        if not oldest and type(message.message_timestamp) == "number" then
          oldest = tostring(message.message_timestamp / 1000)
        end
      end
    end
  end
  out[#out + 1] = {redis.call("llen", list), redis.call("hlen", delayed), redis.call("zcard", dead),
                   inflight, completed, failed, tostring(sum), p95, totals[1] or false, totals[2] or false,
                   totals[3] or false, oldest, redis.call("get", backlog) or false}
end
return out
