--[[ extend: renews the leases of a worker's jobs (its heartbeat), one call for all of them.
KEYS: the queue's keys (prelude).
ARGV[1] lease ms (the new deadline is Redis's now plus it); then two values a job: id, lease
Returns the ids whose lease is no longer theirs (recovered as stalled meanwhile).
]]
local lost = {}
if #ARGV < 3 then
  return lost
end
local ids, leases = {}, {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  leases[#leases + 1] = ARGV[i + 1]
end
local deadline = redis_now() + tonumber(ARGV[1])
local owners = redis.call('HMGET', K_OWNER, unpack(ids))
local args = {}
for i, id in ipairs(ids) do
  if owners[i] == leases[i] then
    args[#args + 1] = deadline
    args[#args + 1] = id
  else
    lost[#lost + 1] = id
  end
end
for s = 1, #args, 1000 do
  redis.call('ZADD', K_ACTIVE, 'XX', unpack(args, s, math.min(s + 999, #args)))
end
return lost
