--[[ remove: removes one job in any state but active.
KEYS: the queue's keys (prelude).  ARGV[1] id
Returns 1 removed, 0 no such job, -1 active (leased by a worker: not removed).
]]
local id = ARGV[1]
if redis.call('HEXISTS', K_JOBS, id) == 0 then
  return 0
end
if redis.call('ZSCORE', K_ACTIVE, id) then
  return -1
end
redis.call('LREM', K_WAIT, 0, id)
for _, k in ipairs({K_PRIO, K_DELAYED, K_DONE, K_FAILED}) do
  redis.call('ZREM', k, id)
end
purge({id})
event('removed', {id, ''})
return 1
