-- Counts one event in a fixed window (core.redis.window_count): INCR, and the window's expiry set with its
-- first event. KEYS[1] the count; ARGV[1] the window in seconds. Returns {count, seconds left}.
-- Not idempotent (a second run counts twice): called only through core.redis.redis_script.
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])); ttl = tonumber(ARGV[1]) end
return {count, ttl}
