-- A company's lane got ids (libs.campaigns.lanes). KEYS: ring, members. ARGV: the company.
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then redis.call('RPUSH', KEYS[1], ARGV[1]) end
