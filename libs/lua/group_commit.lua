-- The group commit (libs.redis_broker.GroupCommit): the acks, nacks and delivery marks of one process in one call.
-- ARGV: the worker's ack-set prefix, the queue prefix, the payload-hash suffix, the delay-queue suffix, the
-- dead-set suffix, the delivery-counter prefix, the heartbeat set, the worker id, the counter TTL (s); then the
-- number of finished jobs and per job its kind ('a' ack: drop the payload; 'n' nack: move it to the queue's dead
-- set, as Dramatiq does), queue, Redis id and message id (its delivery counter is dropped); then the number of
-- marks and per mark the message id, the delta and '1' when only a first delivery may be counted.
-- Acks come first: a Redis out of memory still runs a script whose first write frees memory.
-- Returns per mark its count, or minus the earlier count of a suspect (delivered before without finishing: not
-- counted now). Heartbeats and dead-set scores are on Redis's clock.
local acks, queues, payloads, delayed, dead = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local deliveries, heartbeats, wid, ttl = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local n_acks = tonumber(ARGV[10])
local i = 11
for _ = 1, n_acks do
  local kind, queue, rid, mid = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  if redis.call('srem', acks .. queue, rid) > 0 then
    local msgs = queues .. queue .. payloads
    if kind == 'n' then
      local canonical = queue
      if string.sub(queue, -#delayed) == delayed then canonical = string.sub(queue, 1, #queue - #delayed) end
      local payload = redis.call('hget', msgs, rid)
      if payload then
        redis.call('zadd', queues .. canonical .. dead, now, rid)
        redis.call('hset', queues .. canonical .. dead .. payloads, rid, payload)
      end
    end
    redis.call('hdel', msgs, rid)
  end
  if mid ~= '' then redis.call('del', deliveries .. mid) end
end
redis.call('zadd', heartbeats, now, wid)
local n_marks = tonumber(ARGV[i])
i = i + 1
local counts = {}
for k = 1, n_marks do
  local key = deliveries .. ARGV[i]
  local earlier = ARGV[i + 2] == '1' and tonumber(redis.call('get', key) or '0') or 0
  if earlier > 0 then
    counts[k] = -earlier
  else
    counts[k] = redis.call('incrby', key, ARGV[i + 1])
    redis.call('expire', key, ttl)
  end
  i = i + 3
end
return counts
