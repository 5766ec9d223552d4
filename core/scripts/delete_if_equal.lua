-- Compare-and-delete (core.redis.redis_delete_if_equal): deletes KEYS[1] only if it still holds ARGV[1] (a
-- lock token, a claim or a record made by the caller), never a value another process wrote since.
-- Returns 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
