-- Extends the leases that still exist (tenants.concurrency.tenant_slots_refresh). XX: an expired lease is
-- not revived, its slot may already be someone else's.
-- KEYS: slots. ARGV: lease ms, tokens...
local now = redis.call('TIME')
local expiry = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
