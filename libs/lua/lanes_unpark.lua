-- Put a campaign's parked sends back in its company's lane (libs.campaigns.lanes). KEYS: parked list, parked hash
-- (campaign -> company), parked payloads, queue payloads. ARGV: campaign, lane key prefix, ring, members, backlog.
local company = redis.call('HGET', KEYS[2], ARGV[1])
if not company then return 0 end
local lane = ARGV[2] .. company
local moved = 0
while true do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  local payload = redis.call('HGET', KEYS[3], id)
  if payload then
    redis.call('HSET', KEYS[4], id, payload)
    redis.call('HDEL', KEYS[3], id)
    redis.call('RPUSH', lane, id)
    moved = moved + 1
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
if moved > 0 then
  redis.call('INCRBY', ARGV[5], moved)
  if redis.call('SADD', ARGV[4], company) == 1 then redis.call('RPUSH', ARGV[3], company) end
end
return moved
