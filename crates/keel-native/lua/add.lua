--[[ add: adds jobs (one or a bulk of many) in one call.
KEYS[1] seq     counter: generated ids and the order of prioritized jobs
KEYS[2] jobs    hash: id -> the job (name, data, options, timestamp; encoded by the client)
KEYS[3] wait    list: ids, taken from the right (RPOP); FIFO pushes left, LIFO right
KEYS[4] prio    zset: prioritized ids, score priority * 2^32 + sequence
KEYS[5] delayed zset: ids, score the time they may run (ms)
KEYS[6] pri     hash: id -> priority, for the prioritized jobs only (a delayed one keeps it)
KEYS[7] notify  list: at most one token; idle workers block on it (BLPOP)
ARGV[1] now (ms); then five values a job: custom id ('' = generate), job, delay ms, priority,
        lifo ('1' / '0')
Returns two values a job: its id, and 1 when added or 0 when the custom id existed (the job
is left as it is).
]]
local now = tonumber(ARGV[1])
local out, fifo, lifo = {}, {}, {}
local woke = false
for i = 2, #ARGV, 5 do
  local id = ARGV[i]
  if id == '' then
    id = tostring(redis.call('INCR', KEYS[1]))
  end
  if redis.call('HSETNX', KEYS[2], id, ARGV[i + 1]) == 0 then
    out[#out + 1] = id
    out[#out + 1] = 0
  else
    local delay, prio = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
    if prio > 0 then
      redis.call('HSET', KEYS[6], id, prio)
    end
    if delay > 0 then
      redis.call('ZADD', KEYS[5], now + delay, id)
    elseif prio > 0 then
      local seq = redis.call('INCR', KEYS[1]) % 4294967296
      redis.call('ZADD', KEYS[4], prio * 4294967296 + seq, id)
      woke = true
    elseif ARGV[i + 4] == '1' then
      lifo[#lifo + 1] = id
    else
      fifo[#fifo + 1] = id
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
-- Pushes in chunks: unpack has a limit on the arguments of one call.
local function push(cmd, ids)
  for s = 1, #ids, 1000 do
    redis.call(cmd, KEYS[3], unpack(ids, s, math.min(s + 999, #ids)))
    woke = true
  end
end
push('LPUSH', fifo)
push('RPUSH', lifo)
if woke then
  redis.call('LPUSH', KEYS[7], '1')
  redis.call('LTRIM', KEYS[7], 0, 0)
end
return out
