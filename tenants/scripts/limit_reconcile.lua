-- Compare-and-set of a tenant's limit (tenants.concurrency.tenant_concurrency_limits_reconcile): a worker
-- that read the database just before a PUT committed never overwrites the newer value the PUT wrote.
-- KEYS: limit. ARGV: value read before reading the database ('' when there was none), new value.
local current = redis.call('GET', KEYS[1]) or ''
if current == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
