-- KEYS: drain lock, pending list, scheduled flag, tenants with queued creations. ARGV: token, schema name.
-- The drain's way out: `scheduled` is deleted only if the list is empty, in the same step, so a record queued
-- a moment later finds it unset and its request sends a new drain. The tenant leaves the set of tenants with
-- queued creations (KEYS[4]) in that step too: a record queued a moment later puts it back; and the drain lets
-- go of its lock (the drain that request sends must find it free). 1: done, lock released; 0: records are
-- waiting (drain them); -1: the lease is no longer ours (the drain holding it now is responsible).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
