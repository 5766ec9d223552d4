-- Removes a customer from the tenant's queued creations (conversations/creations.py), atomically.
-- Called by an erasure that holds the drain lock: no drain trims the list meanwhile, so indexes are stable;
-- requests may still append at the tail, which the loop reaches too.
-- KEYS[1] the pending list, KEYS[2] the dead list
-- ARGV[1] the customer id, ARGV[2] JSON array of "<app>:<chat number>" chats already known to be theirs
-- A queued chat of the customer keeps its place (its number must be persisted) without the customer id;
-- queued messages of the customer's chats are removed; dead entries of either are removed.
-- Returns {chats scrubbed, messages removed, dead entries removed, JSON array of the customer's queued chats}.
local customer = ARGV[1]
local theirs = {}
for _, chat in ipairs(cjson.decode(ARGV[2])) do theirs[chat] = true end
local queued_chats = {}
local TOMBSTONE = "__erased__"

local function is_theirs(record)
  if record.kind == "chat" then
    return record.customer_id == customer
  end
  return record.kind == "message" and theirs[tostring(record.app) .. ":" .. tostring(record.chat)] == true
end

local scrubbed, removed = 0, 0
local length = redis.call("LLEN", KEYS[1])
for index = 0, length - 1 do
  local raw = redis.call("LINDEX", KEYS[1], index)
  local ok, record = pcall(cjson.decode, raw)
  if ok and type(record) == "table" then
    if record.kind == "chat" and record.customer_id == customer then
      local chat = tostring(record.app) .. ":" .. tostring(record.number)
      theirs[chat] = true
      table.insert(queued_chats, chat)
      record.customer_id = cjson.null
      redis.call("LSET", KEYS[1], index, cjson.encode(record))
      scrubbed = scrubbed + 1
    elseif is_theirs(record) then
      redis.call("LSET", KEYS[1], index, TOMBSTONE)
      removed = removed + 1
    end
  end
end
if removed > 0 then redis.call("LREM", KEYS[1], 0, TOMBSTONE) end

local dead_removed = 0
local dead_length = redis.call("LLEN", KEYS[2])
for index = 0, dead_length - 1 do
  local raw = redis.call("LINDEX", KEYS[2], index)
  local ok, entry = pcall(cjson.decode, raw)
  if ok and type(entry) == "table" and type(entry.record) == "table" then
    if is_theirs(entry.record) then
      redis.call("LSET", KEYS[2], index, TOMBSTONE)
      dead_removed = dead_removed + 1
    end
  end
end
if dead_removed > 0 then redis.call("LREM", KEYS[2], 0, TOMBSTONE) end

if #queued_chats == 0 then return {scrubbed, removed, dead_removed, "[]"} end
return {scrubbed, removed, dead_removed, cjson.encode(queued_chats)}
