-- The provider refused a send to a pair (Meta 131056) (libs.sending.throttle). KEYS: the pair's back-off. ARGV: the
-- refusals the send was made with, its back-off and how long the count outlives it (ms). The count never goes back,
-- the hold never shortens: two sends refused in the same round count once.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n = math.max(tonumber(redis.call('HGET', KEYS[1], 'n')) or 0, tonumber(ARGV[1]) + 1)
local hold = math.max(tonumber(redis.call('HGET', KEYS[1], 'until')) or 0, now + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'n', n, 'until', hold)
redis.call('PEXPIRE', KEYS[1], 2 * (hold - now) + tonumber(ARGV[3]))
return n
