-- Extends the leases that still exist (tenants.concurrency.tenant_slots_refresh). XX: an expired lease is
-- not revived, its slot may already be someone else's.
-- KEYS: slots. ARGV: lease ms, tokens...
--! include now_ms
local expiry = now_ms() + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
