-- Reservations for many sends in one call, in order (a later one sees an earlier one's admission)
-- (libs.sending.throttle). KEYS: per send its connection schedule, pair schedule, admission log and pair back-off.
-- ARGV: burst, horizon, pair interval, pair burst, then per send its interval, its limit per window and its window
-- (ms). Returns per send a code, a number of ms and the pair's provider refusals in a row.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local burst = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local pair_interval = tonumber(ARGV[3])
local pair_burst = tonumber(ARGV[4])

local function reserve(conn_key, pair_key, log_key, hits_key, interval, limit, window)
  local backoff = redis.call('HMGET', hits_key, 'n', 'until')
  local held = (tonumber(backoff[2]) or 0) - now
  if held > 0 then return 1, math.ceil(held) end
  local tat = math.max(tonumber(redis.call('GET', conn_key) or now), now)
  local wait = tat - now
  if wait > horizon then return 2, math.ceil(wait - horizon) end
  if wait > burst then return 3, math.ceil(wait) end
  redis.call('ZREMRANGEBYSCORE', log_key, '-inf', now - window)
  if redis.call('ZCARD', log_key) >= limit then
    local oldest = redis.call('ZRANGE', log_key, 0, 0, 'WITHSCORES')
    return 3, math.max(1, math.ceil(tonumber(oldest[2]) + window - now))
  end
  if pair_interval > 0 then
    local pair_tat = math.max(tonumber(redis.call('GET', pair_key) or now), now)
    local allowed_at = pair_tat + pair_interval - pair_interval * pair_burst
    if allowed_at > now then return 1, math.ceil(allowed_at - now) end
    local pair_next = pair_tat + pair_interval
    redis.call('SET', pair_key, tostring(pair_next), 'PX', math.ceil(pair_next - now) + 1000)
  end
  redis.call('SET', conn_key, tostring(tat + interval), 'PX', math.ceil(wait + interval) + 60000)
  redis.call('ZADD', log_key, now, tostring(tat))
  redis.call('PEXPIRE', log_key, window + 1000)
  return 0, 0, tonumber(backoff[1]) or 0
end

local out = {}
for i = 0, #KEYS / 4 - 1 do
  local a = 5 + i * 3
  local code, ms, hits = reserve(KEYS[i * 4 + 1], KEYS[i * 4 + 2], KEYS[i * 4 + 3], KEYS[i * 4 + 4],
                                 tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]))
  out[#out + 1] = code
  out[#out + 1] = ms
  out[#out + 1] = hits or 0
end
return out
