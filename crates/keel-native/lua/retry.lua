--[[ retry: a failed job back to waiting, its attempts, stalls and error reset.
KEYS: the queue's keys (prelude).  ARGV[1] id
Returns 1 retried, 0 no such job, -1 not failed.
]]
local id = ARGV[1]
if redis.call('HEXISTS', K_JOBS, id) == 0 then
  return 0
end
if not redis.call('ZSCORE', K_FAILED, id) then
  return -1
end
redis.call('ZREM', K_FAILED, id)
for _, k in ipairs({K_ATT, K_STALLS, K_ERR, K_RET, K_FRESH}) do
  redis.call('HDEL', k, id)
end
to_waiting({id}, false)
event('waiting', {id, ''})
return 1
