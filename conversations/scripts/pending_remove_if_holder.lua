-- KEYS: drain lock, pending list. ARGV: token, how many records to drop from the head.
-- Trims the committed records only while the drain still holds the lock, in one step. A drain whose lease
-- ran out (a slow batch) must not trim: the drain that took over read the same head of the list, re-inserts
-- it idempotently and trims it itself; a second trim would drop records nobody persisted.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1
