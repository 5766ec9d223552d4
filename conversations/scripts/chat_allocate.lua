-- Allocates a chat number and queues the chat's creation with it (conversations.creations.chat_number_allocate).
-- KEYS: chats counter, pending list, scheduled flag, tenants with queued creations, [open-chat record].
-- ARGV: record, message-counter key prefix, its suffix, scheduled TTL, schema name, [open-chat TTL].
--
-- ARGV[1] is the record, a JSON object without its number: the script appends the number to the text
-- (cheaper than decoding and encoding it in Lua; bench/README.md, "drain").
--
-- The tenant is added (ARGV[5]: its schema name) to the platform's set of tenants with queued creations
-- (KEYS[4]; tenants.work), scored with Redis' clock if it is not there yet: in the same step as the record is
-- queued, so no queued creation is ever missing from the drains' safety net. NX: the score says since when
-- the tenant's creations have waited without a drain making progress (each batch re-scores it, drain_lease.lua),
-- not when the last one came: under steady traffic with a dead drain, the entry still grows old and the
-- dispatcher sends a drain.
--
-- Returns {number, scheduled, created}, or -1 when the counter is missing (re-seed, then call again).
-- With KEYS[5] (the inbound webhook's "open chat of this customer" record): if it holds a chat number, that
-- number is returned and nothing is allocated (created = 0); otherwise the new chat's number is recorded
-- there in the same step, so two deliveries for a new customer can never open two chats.
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if KEYS[5] then
  local open = redis.call('GET', KEYS[5])
  if open then return {tonumber(open), 0, 0} end
end
local number = redis.call('INCR', KEYS[1])
redis.call('RPUSH', KEYS[2], string.sub(ARGV[1], 1, -2) .. ',"number":' .. number .. '}')
redis.call('ZADD', KEYS[4], 'NX', redis.call('TIME')[1], ARGV[5])
-- a new chat's message counter starts at 0, so its first message needs no database read
redis.call('SET', ARGV[2] .. number .. ARGV[3], 0, 'NX')
local scheduled = redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[4]))
if KEYS[5] then redis.call('SET', KEYS[5], number, 'EX', tonumber(ARGV[6])) end
return {number, scheduled and 1 or 0, 1}
