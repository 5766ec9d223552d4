-- KEYS: drain lock, pending list, scheduled flag, tenants with queued creations.
-- ARGV: token, lease seconds, schema name, committed records to drop from the head (0: none), take ("1": take
-- the lock if nobody holds it).
-- The drain's one round trip between batches: takes the lock (a drain starting) or checks it is still ours,
-- drops the records the last batch committed, renews the lease for one more batch and returns how many
-- records wait; -1 if the lock is not ours (taken by another drain, or our lease ran out).
-- Trimming only while we hold the lock, in the same step: a drain whose lease ran out (a slow batch) must not
-- trim, since the drain that took over read the same head of the list, re-inserts it idempotently and trims
-- it itself; a second trim would drop records nobody persisted.
-- Renewing keeps `scheduled` set for as long as the lease: while a drain runs, requests send no task (it will
-- see their records); if the drain's worker dies, both expire together and requests schedule again. And it is
-- the drain's heartbeat: the tenant's entry among tenants with queued creations (KEYS[4]) is re-scored now
-- (XX: never re-added after the drain removed it), so only a drain that stopped making progress lets it grow
-- older than CREATIONS_SWEEP_SECONDS.
local holder = redis.call('GET', KEYS[1])
if holder ~= ARGV[1] and (ARGV[5] ~= '1' or holder) then return -1 end
if tonumber(ARGV[4]) > 0 then redis.call('LTRIM', KEYS[2], tonumber(ARGV[4]), -1) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
redis.call('SET', KEYS[3], 1, 'EX', tonumber(ARGV[2]))
redis.call('ZADD', KEYS[4], 'XX', redis.call('TIME')[1], ARGV[3])
return redis.call('LLEN', KEYS[2])
