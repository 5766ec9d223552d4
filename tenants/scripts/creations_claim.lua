-- Claims the tenants whose queued creations wait for a drain (tenants.work.tenant_work_dispatch). KEYS: the
-- tenants with queued creations. ARGV: stale before, now, limit.
-- Entries scored at or before ARGV[1] (up to ARGV[3]) are taken and re-scored ARGV[2] (now): a drain sent
-- for them that is lost too is sent again one sweep period later, not at every dispatch. XX: an entry the
-- drain removed meanwhile is not brought back.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, name in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], name) end
return due
