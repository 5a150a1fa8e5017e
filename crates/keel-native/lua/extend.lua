--[[ extend: renews the leases of a worker's jobs (its heartbeat), one call for all of them.
KEYS: the queue's keys (prelude).
ARGV[1] token  ARGV[2] new deadline (ms); then the ids
Returns the ids whose lease is no longer this worker's (recovered as stalled meanwhile).
]]
local lost = {}
if #ARGV < 3 then
  return lost
end
local ids = {}
for i = 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local owners = redis.call('HMGET', K_OWNER, unpack(ids))
local args = {}
for i, id in ipairs(ids) do
  if owners[i] == ARGV[1] then
    args[#args + 1] = ARGV[2]
    args[#args + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for s = 1, #args, 1000 do
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(args, s, math.min(s + 999, #args)))
end
return lost
