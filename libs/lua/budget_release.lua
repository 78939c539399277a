-- Moves campaign sends waiting for messaging-limit budget into their company's lane as room frees up
-- (libs.rules.budget); returns how many moved.
-- KEYS: the portfolios set, the limits hash, the waiting payloads, the test-clock key, the campaign-portfolio
-- hash, the entries hash (id -> company|digest|row id), the waiting rows hash (row id -> id). ARGV: the reached prefix, the campaigns prefix, the wait prefix, the window (ms), the most sends to
-- move, the lanes' payload hash, lane prefix, backlog counter, members set, ring. The clock is Redis's plus the
-- test clock's offset (only ever set when ZAPQ_TEST_CLOCK is on).
-- Each portfolio's campaigns are served oldest first, each campaign's sends in order; a send whose recipient
-- is already reached within the window moves free, a new one only while the count is under the limit.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
now = now + tonumber(redis.call('GET', KEYS[4]) or '0')
local reached_prefix, campaigns_prefix, wait_prefix = ARGV[1], ARGV[2], ARGV[3]
local window, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
local queue_msgs, lane_prefix, backlog, members, ring = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local moved = 0
for _, portfolio in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local reached = reached_prefix .. portfolio
  local campaigns = campaigns_prefix .. portfolio
  redis.call('ZREMRANGEBYSCORE', reached, '-inf', now - window)
  local count = redis.call('ZCARD', reached)
  -- no limit recorded (lost): only recipients already reached move, until the minute refresh writes it again
  local limit = tonumber(redis.call('HGET', KEYS[2], portfolio) or '0')
  local blocked = false
  for _, campaign in ipairs(redis.call('ZRANGE', campaigns, 0, -1)) do
    local wait = wait_prefix .. campaign
    while moved < budget do
      local id = redis.call('LINDEX', wait, 0)
      if not id then break end
      local entry = redis.call('HGET', KEYS[6], id)
      local payload = redis.call('HGET', KEYS[3], id)
      if not entry or not payload then
        redis.call('LPOP', wait)  -- a duplicate already moved, or dropped with its cancelled campaign
      else
        local company, digest, row = string.match(entry, '^([^|]*)|([^|]*)|(.*)$')
        local known = redis.call('ZSCORE', reached, digest)
        if not known and limit >= 0 and count >= limit then
          blocked = true
          break
        end
        if not known then count = count + 1 end
        redis.call('ZADD', reached, now, digest)
        redis.call('LPOP', wait)
        redis.call('HDEL', KEYS[6], id)
        redis.call('HDEL', KEYS[7], row)
        redis.call('HSET', queue_msgs, id, payload)
        redis.call('HDEL', KEYS[3], id)
        redis.call('RPUSH', lane_prefix .. company, id)
        redis.call('INCR', backlog)
        if redis.call('SADD', members, company) == 1 then redis.call('RPUSH', ring, company) end
        moved = moved + 1
      end
    end
    if redis.call('LLEN', wait) == 0 then
      redis.call('ZREM', campaigns, campaign)
      redis.call('HDEL', KEYS[5], campaign)
    end
    if blocked or moved >= budget then break end
  end
  redis.call('PEXPIRE', reached, window)
  if redis.call('ZCARD', campaigns) == 0 then redis.call('SREM', KEYS[1], portfolio) end
end
return moved
