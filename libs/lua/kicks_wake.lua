-- Schedule an endpoint's delayed pump (libs.events.kicks). KEYS[1]: wake. ARGV: due ms, now ms. 1 when a delayed
-- pump must be scheduled for due.
local current = tonumber(redis.call('GET', KEYS[1]))
local due, now = tonumber(ARGV[1]), tonumber(ARGV[2])
if current and current > now and current <= due then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, due - now) + 60000)
return 1
