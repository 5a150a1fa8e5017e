--[[ add: adds jobs (one or a bulk of many) in one call.
KEYS: the queue's keys (prelude).
ARGV[1] unused (the time is Redis's); then eight values a job: custom id ('' = generate), job (encoded), delay ms,
priority, lifo ('1' / '0'), deduplication id ('' = none), deduplication ttl ms (0 = until the
job finishes), name (for the `added` event).
Returns two values a job: its id, and 1 when added or 0 when an existing job was returned (its
custom id existed, or its deduplication id is held).
]]
local now = redis_now()
local out, fifo, lifo, added = {}, {}, {}, {}
local ready = false

-- The job holding a deduplication id, if it still holds it.
local function holder(dedup)
  local held = redis.call('HGET', K_DEDUP, dedup)
  if not held then
    return nil
  end
  local sep = string.find(held, '|', 1, true)
  local id, until_ms = string.sub(held, 1, sep - 1), tonumber(string.sub(held, sep + 1))
  if redis.call('HEXISTS', K_JOBS, id) == 0 then
    return nil
  end
  if until_ms > 0 then
    return (now < until_ms) and id or nil
  end
  if redis.call('ZSCORE', K_DONE, id) or redis.call('ZSCORE', K_FAILED, id) then
    return nil
  end
  return id
end

for i = 2, #ARGV, 8 do
  local id, dedup = ARGV[i], ARGV[i + 5]
  local existing = (dedup ~= '') and holder(dedup) or nil
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    if id == '' then
      id = tostring(redis.call('INCR', K_SEQ))
    end
    if redis.call('HSETNX', K_JOBS, id, ARGV[i + 1]) == 0 then
      out[#out + 1] = id
      out[#out + 1] = 0
    else
      if dedup ~= '' then
        local ttl = tonumber(ARGV[i + 6])
        redis.call('HSET', K_DEDUP, dedup, id .. '|' .. ((ttl > 0) and (now + ttl) or 0))
      end
      local delay, prio = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
      if prio > 0 then
        redis.call('HSET', K_PRI, id, prio)
      end
      if delay > 0 then
        redis.call('ZADD', K_DELAYED, now + delay, id)
      elseif prio > 0 then
        local seq = redis.call('INCR', K_SEQ) % PRIO_UNIT
        redis.call('ZADD', K_PRIO, prio * PRIO_UNIT + seq, id)
        ready = true
      elseif ARGV[i + 4] == '1' then
        lifo[#lifo + 1] = id
      else
        fifo[#fifo + 1] = id
      end
      added[#added + 1] = id
      added[#added + 1] = ARGV[i + 7]
      out[#out + 1] = id
      out[#out + 1] = 1
    end
  end
end
if #fifo > 0 then
  each('LPUSH', K_WAIT, fifo)
  ready = true
end
if #lifo > 0 then
  each('RPUSH', K_WAIT, lifo)
  ready = true
end
if ready then
  notify()
end
event('added', added)
return out
