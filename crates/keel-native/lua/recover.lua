--[[ recover: jobs whose lease expired (their worker died or stopped renewing) go back to the
front of waiting, their stall counted; past the poison limit they fail instead.
KEYS: the queue's keys (prelude).
ARGV[1] max stalls (a job stalling more often fails)  ARGV[2] most jobs a call
ARGV[3] the error of a job failed as a poison pill (JSON)
Returns the ids recovered, then '' and the ids failed.
]]
local now, max = redis_now(), tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local back, failed, ev_stalled, ev_failed = {}, {}, {}, {}
for _, id in ipairs(expired) do
  redis.call('ZREM', K_ACTIVE, id)
  redis.call('HDEL', K_OWNER, id)
  if redis.call('HEXISTS', K_JOBS, id) == 1 then
    ev_stalled[#ev_stalled + 1] = id
    ev_stalled[#ev_stalled + 1] = ''
    redis.call('HINCRBY', K_FRESH, id, 1)
    if redis.call('HINCRBY', K_STALLS, id, 1) > max then
      redis.call('HINCRBY', K_ATT, id, 1)
      redis.call('ZADD', K_FAILED, now, id)
      redis.call('HSET', K_ERR, id, ARGV[3])
      failed[#failed + 1] = id
      ev_failed[#ev_failed + 1] = id
      ev_failed[#ev_failed + 1] = ARGV[3]
    else
      back[#back + 1] = id
    end
  end
end
-- The right end is the next taken: a recovered job does not wait behind the queue.
to_waiting(back, true)
event('stalled', ev_stalled)
event('failed', ev_failed)
local out = back
out[#out + 1] = ''
for _, id in ipairs(failed) do
  out[#out + 1] = id
end
return out
