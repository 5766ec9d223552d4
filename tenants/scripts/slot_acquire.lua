-- Takes one of a tenant's slots (tenants.concurrency.tenant_slot_acquire).
-- KEYS: slots, limit, closed. ARGV: token, lease ms.
-- Returns 1 (acquired), 0 (saturated), -1 (closed: the tenant is being deleted), -2 (no limit in Redis:
-- nothing was taken; the caller writes the database's limit and asks again).
--! include now_ms
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local limit = redis.call('GET', KEYS[2])
if not limit then return -2 end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(limit) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
return 1
