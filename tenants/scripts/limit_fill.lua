-- Writes a tenant's limit only if Redis has none (lost: flushed or restarted) and the tenant is not being
-- deleted (tenants.concurrency.tenant_concurrency_limit_fill). KEYS: limit, closed. ARGV: limit.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then return 1 end
return 0
