-- KEYS: the cache keys; ARGV[1]: TTL seconds; ARGV[i + 1]: the value of KEYS[i]. Returns how many were set.
for index, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[index + 1], 'EX', ARGV[1])
end
return #KEYS
