-- Kick endpoints' pumps (libs.events.kicks). KEYS: dirty, queued per endpoint (pairs). ARGV: the queued flag's TTL.
-- Returns the endpoint indexes (0-based) to enqueue a pump for.
local out = {}
for i = 1, #KEYS, 2 do
  redis.call('SET', KEYS[i], '1', 'EX', 3600)
  if redis.call('SET', KEYS[i + 1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
    out[#out + 1] = (i - 1) / 2
  end
end
return out
