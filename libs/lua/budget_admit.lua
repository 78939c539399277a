-- Admits one slice of a portfolio's business-initiated recipients against its messaging limit
-- (libs.rules.budget); one call per slice.
-- KEYS: the portfolio's reached set, the limits hash, the test-clock key. ARGV: the portfolio key, the limit to
-- admit under (-1: unlimited), the window (ms), the portfolio's limit to record ('': leave it), then one
-- recipient digest per send. The clock is Redis's plus the test
-- clock's offset (only ever set when ZAPQ_TEST_CLOCK is on).
-- A digest already reached within the window is admitted free (its time moves to now); a new one while the
-- count is under the limit is admitted and counted; the rest are refused.
-- Returns {flags ('1' admitted / '0' refused, one per digest), count after, oldest reached time (ms) or -1, now}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
now = now + tonumber(redis.call('GET', KEYS[3]) or '0')
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
local count = redis.call('ZCARD', KEYS[1])
local flags = {}
for i = 5, #ARGV do
  local digest = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], digest) then
    redis.call('ZADD', KEYS[1], now, digest)
    flags[#flags + 1] = '1'
  elseif limit < 0 or count < limit then
    redis.call('ZADD', KEYS[1], now, digest)
    count = count + 1
    flags[#flags + 1] = '1'
  else
    flags[#flags + 1] = '0'
  end
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local first = -1
if oldest[2] then first = tonumber(oldest[2]) end
return {table.concat(flags), count, first, now}
