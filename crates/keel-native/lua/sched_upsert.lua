--[[ sched_upsert: creates or replaces a scheduler and adds the job of its next run (replacing
the pending job of the scheduler's previous version).
KEYS: the queue's keys (prelude).
ARGV[1] scheduler id  ARGV[2] its spec (JSON: schedule and job template)  ARGV[3] next run
(ms)  ARGV[4] the job of that run (encoded)
Returns the scheduler's iteration count.
]]
local id, next_run = ARGV[1], ARGV[3]
local old = redis.call('ZSCORE', K_SCHEDZ, id)
if old then
  local old_job = 'sched:' .. id .. ':' .. old
  if tonumber(old) ~= tonumber(next_run) and redis.call('ZREM', K_DELAYED, old_job) == 1 then
    purge({old_job})
  end
end
redis.call('HSET', K_SCHEDS, id, ARGV[2])
redis.call('ZADD', K_SCHEDZ, next_run, id)
local job_id = 'sched:' .. id .. ':' .. next_run
if redis.call('HSETNX', K_JOBS, job_id, ARGV[4]) == 1 then
  redis.call('ZADD', K_DELAYED, next_run, job_id)
  redis.call('HINCRBY', K_SCHEDI, id, 1)
elseif redis.call('ZSCORE', K_DELAYED, job_id) then
  -- The same next run, a new template: the pending job takes it.
  redis.call('HSET', K_JOBS, job_id, ARGV[4])
end
return tonumber(redis.call('HGET', K_SCHEDI, id) or '0')
