-- Allocates a message number in a chat and queues the message's creation with it
-- (conversations.creations.message_number_allocate).
-- KEYS: chats counter, messages counter, pending list, scheduled flag, tenants with queued creations,
-- [delivery record]. ARGV: record, chat number, scheduled TTL, schema name, [claim, answer TTL].
--
-- ARGV[1] is the record without its number, and the tenant joins the set of tenants with queued creations
-- (KEYS[5]) in the same step, NX, as in chat_allocate.lua.
--
-- Returns the new message number; 0 when the chat number was never allocated; -1 to re-seed.
-- With KEYS[6] (an inbound delivery's idempotency record, conversations.inbound): -2 unless it still holds
-- this delivery's claim ARGV[5]; else the answer is stored there (for ARGV[6] seconds) in the same step as
-- the message is queued, so no crash can leave a queued message whose delivery a retry would repeat.
local chats = redis.call('GET', KEYS[1])
if not chats then return -1 end
if tonumber(ARGV[2]) > tonumber(chats) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if KEYS[6] and redis.call('GET', KEYS[6]) ~= ARGV[5] then return -2 end
local number = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[3], string.sub(ARGV[1], 1, -2) .. ',"number":' .. number .. '}')
redis.call('ZADD', KEYS[5], 'NX', redis.call('TIME')[1], ARGV[4])
local scheduled = redis.call('SET', KEYS[4], 1, 'NX', 'EX', tonumber(ARGV[3]))
if KEYS[6] then
  local answer = cjson.encode({chat_number = tonumber(ARGV[2]), message_number = number})
  redis.call('SET', KEYS[6], answer, 'EX', tonumber(ARGV[6]))
end
return {number, scheduled and 1 or 0}
