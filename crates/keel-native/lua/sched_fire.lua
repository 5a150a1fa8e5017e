--[[ sched_fire: a worker took the job of a scheduler's run; this adds the job of the next run,
once across every worker (the scheduler's next run must still be the run taken).
KEYS: the queue's keys (prelude).
ARGV[1] scheduler id  ARGV[2] the run taken (ms)  ARGV[3] the next run (ms)  ARGV[4] its job
Returns 1 when the next job was added, 0 when another worker did or the scheduler changed.
]]
local id = ARGV[1]
local cur = redis.call('ZSCORE', K_SCHEDZ, id)
if not cur or tonumber(cur) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', K_SCHEDZ, ARGV[3], id)
local job_id = 'sched:' .. id .. ':' .. ARGV[3]
if redis.call('HSETNX', K_JOBS, job_id, ARGV[4]) == 1 then
  redis.call('ZADD', K_DELAYED, ARGV[3], job_id)
  redis.call('HINCRBY', K_SCHEDI, id, 1)
end
return 1
