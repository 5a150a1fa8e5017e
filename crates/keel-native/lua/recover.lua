--[[ recover: jobs whose lease expired (their worker died or stopped renewing) go back to the
front of waiting, their stall counted; past the poison limit they fail instead.
KEYS[1] active  KEYS[2] owner  KEYS[3] wait  KEYS[4] stalls  KEYS[5] failed  KEYS[6] err
KEYS[7] att  KEYS[8] notify
ARGV[1] now  ARGV[2] max stalls (a job stalling more often fails)  ARGV[3] most jobs a call
ARGV[4] the error of a job failed as a poison pill
Returns the ids recovered, then '' and the ids failed.
]]
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local back, failed = {}, {}
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if redis.call('HINCRBY', KEYS[4], id, 1) > max then
    redis.call('HINCRBY', KEYS[7], id, 1)
    redis.call('ZADD', KEYS[5], now, id)
    redis.call('HSET', KEYS[6], id, ARGV[4])
    failed[#failed + 1] = id
  else
    -- The right end is the next taken: a recovered job does not wait behind the queue.
    redis.call('RPUSH', KEYS[3], id)
    back[#back + 1] = id
  end
end
if #back > 0 then
  redis.call('LPUSH', KEYS[8], '1')
  redis.call('LTRIM', KEYS[8], 0, 0)
end
local out = back
out[#out + 1] = ''
for _, id in ipairs(failed) do
  out[#out + 1] = id
end
return out
