-- The Redis server's clock in milliseconds (one clock for every machine, however skewed theirs are).
local function now_ms()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
