-- Feed the lanes into their queue (libs.campaigns.lanes). KEYS: queue list, ring, members, backlog, seq, weights,
-- credit. ARGV: lane key prefix, buffer, quantum.
-- Deficit round-robin: the ring's head lane takes up to its credit (quantum x weight); the turn passes on only once
-- the credit is spent, so a feed cut short by the buffer resumes the same lane next time.
local room = tonumber(ARGV[2]) - redis.call('LLEN', KEYS[1])
local quantum = tonumber(ARGV[3])
local moved = 0
while room > 0 do
  local company = redis.call('LINDEX', KEYS[2], 0)
  if not company then break end
  local lane = ARGV[1] .. company
  local credit = tonumber(redis.call('HGET', KEYS[7], company))
  if not credit then
    credit = quantum * math.max(1, tonumber(redis.call('HGET', KEYS[6], company) or 1) or 1)
  end
  local ids = redis.call('LPOP', lane, math.min(credit, room))
  local got = 0
  if ids then
    got = #ids
    redis.call('RPUSH', KEYS[1], unpack(ids))
    moved = moved + got
    room = room - got
  end
  credit = credit - got
  if redis.call('LLEN', lane) == 0 then
    redis.call('LPOP', KEYS[2])
    redis.call('SREM', KEYS[3], company)
    redis.call('HDEL', KEYS[7], company)
  elseif credit <= 0 or got == 0 then
    redis.call('LMOVE', KEYS[2], KEYS[2], 'LEFT', 'RIGHT')
    redis.call('HDEL', KEYS[7], company)
  else
    redis.call('HSET', KEYS[7], company, credit)
  end
end
if moved > 0 then
  redis.call('DECRBY', KEYS[4], moved)
  redis.call('INCRBY', KEYS[5], moved)
end
return moved
