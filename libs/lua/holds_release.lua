-- Moves parked sends back to their queue, or to their company's lane (libs.sending.holds); returns how many.
-- KEYS: the holds set, the parked payloads. ARGV: the hold prefix, the queue prefix, the payload-hash suffix, the
-- lanes' queue, its lane prefix, its backlog counter, its members set, its ring, the seq-counter prefix, the mode
-- ('all' or 'expired': only the sends past their deadline), then the holds to release ('expired': none = every
-- hold).
local hold_prefix, queues, payloads = ARGV[1], ARGV[2], ARGV[3]
local lane_queue, lane_prefix, backlog, members, ring = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local seq_prefix, mode = ARGV[9], ARGV[10]
local max = '+inf'
if mode == 'expired' then
  local clock = redis.call('TIME')
  max = tostring(tonumber(clock[1]) + tonumber(clock[2]) / 1000000)
end
local holds = {}
for i = 11, #ARGV do holds[#holds + 1] = ARGV[i] end
if #holds == 0 and mode == 'expired' then holds = redis.call('SMEMBERS', KEYS[1]) end
local moved = 0
for _, hold in ipairs(holds) do
  local key = hold_prefix .. hold
  for _, entry in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', max)) do
    local queue, company, id = string.match(entry, '^([^|]*)|([^|]*)|(.*)$')
    local payload = redis.call('HGET', KEYS[2], id)
    if payload then
      redis.call('HSET', queues .. queue .. payloads, id, payload)
      if queue == lane_queue then
        redis.call('RPUSH', lane_prefix .. company, id)
        redis.call('INCR', backlog)
        if redis.call('SADD', members, company) == 1 then
          redis.call('RPUSH', ring, company)
        end
      else
        redis.call('RPUSH', queues .. queue, id)
        redis.call('INCR', seq_prefix .. queue)
      end
      redis.call('HDEL', KEYS[2], id)
      moved = moved + 1
    end
    redis.call('ZREM', key, entry)
  end
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', KEYS[1], hold) end
end
return moved
