-- Takes back one event counted by window_count.lua, only while its window is open (never a key without
-- expiry). KEYS[1] the count. Not idempotent: called only through core.redis.redis_script.
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end
return 0
