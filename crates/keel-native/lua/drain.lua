--[[ drain: removes every waiting and prioritized job, and the delayed ones too when asked.
KEYS: the queue's keys (prelude).  ARGV[1] '1' to drain delayed jobs too
Returns how many jobs were removed.
]]
local ids = redis.call('LRANGE', K_WAIT, 0, -1)
for _, id in ipairs(redis.call('ZRANGE', K_PRIO, 0, -1)) do
  ids[#ids + 1] = id
end
local lists = {K_WAIT, K_PRIO}
if ARGV[1] == '1' then
  for _, id in ipairs(redis.call('ZRANGE', K_DELAYED, 0, -1)) do
    ids[#ids + 1] = id
  end
  lists[#lists + 1] = K_DELAYED
end
purge(ids)
redis.call('DEL', unpack(lists))
return #ids
