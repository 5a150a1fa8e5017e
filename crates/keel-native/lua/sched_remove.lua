--[[ sched_remove: removes a scheduler and the pending job of its next run.
KEYS: the queue's keys (prelude).  ARGV[1] scheduler id
Returns 1 removed, 0 no such scheduler.
]]
local id = ARGV[1]
local next_run = redis.call('ZSCORE', K_SCHEDZ, id)
if not next_run then
  return 0
end
redis.call('ZREM', K_SCHEDZ, id)
redis.call('HDEL', K_SCHEDS, id)
redis.call('HDEL', K_SCHEDI, id)
local job_id = 'sched:' .. id .. ':' .. next_run
if redis.call('ZREM', K_DELAYED, job_id) == 1 then
  purge({job_id})
end
return 1
