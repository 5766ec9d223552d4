-- KEYS: drain lock, scheduled flag, tenants with queued creations. ARGV: token, lease seconds, schema name.
-- Renews the drain's lease and keeps `scheduled` set for as long: while a drain runs, requests send no task
-- (it will see their records). If the drain's worker dies, both expire together and requests schedule again.
-- The drain's heartbeat too: the tenant's entry among tenants with queued creations (KEYS[3]) is re-scored
-- now (XX: never re-added after the drain removed it), so only a drain that stopped making progress lets it
-- grow older than CREATIONS_SWEEP_SECONDS.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('SET', KEYS[2], 1, 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[3], 'XX', redis.call('TIME')[1], ARGV[3])
return 1
