-- Live leases of a tenant (tenants.concurrency.tenant_slots_in_use). KEYS: slots.
--! include now_ms
return redis.call('ZCOUNT', KEYS[1], '(' .. now_ms(), '+inf')
