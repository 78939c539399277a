-- SET each key to its value with its own expiry, in one round trip: the send journal's provider ids
-- (libs.sending.journal).
-- KEYS: the keys. ARGV: per key, its TTL in seconds then its value.
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i], 'EX', ARGV[2 * i - 1])
end
return #KEYS
