-- SET each key to its value with its own expiry: the send journal's provider ids (libs.sending.journal) and, in
-- the same call, the trace links of traced sends and of the events a webhook wrote (libs.tracing).
-- KEYS: the keys. ARGV: per key, its TTL in seconds then its value.
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i], 'EX', ARGV[2 * i - 1])
end
return #KEYS
