-- Live leases of a tenant (tenants.concurrency.tenant_slots_in_use). KEYS: slots.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms, '+inf')
