-- Journal provider ids (libs.sending.journal). KEYS: one per send. ARGV: the TTL, then one provider id per key.
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'EX', ARGV[1])
end
return #KEYS
