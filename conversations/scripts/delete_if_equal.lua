-- Deletes KEYS[1] only if it still holds ARGV[1] (a claim or a record made by the caller), never a value
-- another request wrote since. Returns 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
