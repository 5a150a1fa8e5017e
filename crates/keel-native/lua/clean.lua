--[[ clean: removes up to `limit` jobs of a state older than a cutoff — by finish time for
completed and failed, by add time (the job's `t`) for waiting, prioritized and delayed.
KEYS: the queue's keys (prelude).
ARGV[1] state (completed, failed, waiting, prioritized, delayed)  ARGV[2] grace (ms: jobs
older than Redis's now minus it go)  ARGV[3] limit
Returns the removed ids.
]]
local state, cutoff, limit = ARGV[1], redis_now() - tonumber(ARGV[2]), tonumber(ARGV[3])
local doomed = {}
if state == 'completed' or state == 'failed' then
  local z = (state == 'completed') and K_DONE or K_FAILED
  doomed = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff, 'LIMIT', 0, limit)
  each('ZREM', z, doomed)
else
  local ids
  if state == 'waiting' then
    -- Oldest first: the right end of the list.
    ids = redis.call('LRANGE', K_WAIT, 0, -1)
    local n = #ids
    for i = 1, math.floor(n / 2) do
      ids[i], ids[n - i + 1] = ids[n - i + 1], ids[i]
    end
  else
    ids = redis.call('ZRANGE', (state == 'delayed') and K_DELAYED or K_PRIO, 0, -1)
  end
  for s = 1, #ids, 500 do
    if #doomed >= limit then
      break
    end
    local part = {unpack(ids, s, math.min(s + 499, #ids))}
    local jobs = redis.call('HMGET', K_JOBS, unpack(part))
    for i, id in ipairs(part) do
      if #doomed < limit and jobs[i] and cjson.decode(jobs[i]).t <= cutoff then
        doomed[#doomed + 1] = id
      end
    end
  end
  for _, id in ipairs(doomed) do
    if state == 'waiting' then
      redis.call('LREM', K_WAIT, 0, id)
    end
  end
  if state ~= 'waiting' then
    each('ZREM', (state == 'delayed') and K_DELAYED or K_PRIO, doomed)
  end
end
purge(doomed)
return doomed
