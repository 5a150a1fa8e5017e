--[[ prelude: prepended to every script by the engine (`Scripts::load`). Every script gets the
queue's keys as KEYS in the order of `KEY_NAMES` in lib.rs — the same 24 keys, all under the
queue's hash tag — and the helpers below. A job's log is the one per-job key
(`<base>log:<id>`); its name is built here from the base, in the same hash tag. ]]
local K_JOBS, K_WAIT, K_PRIO, K_DELAYED, K_ACTIVE, K_OWNER, K_ATT, K_STALLS, K_DONE, K_RET,
  K_FAILED, K_ERR, K_PRI, K_META, K_NOTIFY, K_SEQ, K_DEDUP, K_EVENTS, K_PROGRESS, K_SCHEDS,
  K_SCHEDZ, K_SCHEDI, K_LIMITER, K_FRESH = unpack(KEYS, 1, 24)
local BASE = string.sub(K_JOBS, 1, -5)
local EVENTS_KEPT = 1000
-- Priority scores: priority * 2^31 + a sequence (FIFO within a priority), exact in a double up
-- to the maximum priority 2^21.
local PRIO_UNIT = 2147483648

-- Redis's clock (ms): leases, delays and finish times are on one clock whatever the clients'.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- `cmd key ids...` in chunks: unpack has a limit on the arguments of one call.
local function each(cmd, key, ids)
  for s = 1, #ids, 1000 do
    redis.call(cmd, key, unpack(ids, s, math.min(s + 999, #ids)))
  end
end

-- One entry of the events stream: `e` the kind, then field/value pairs (id, detail).
local function event(kind, pairs_)
  if #pairs_ > 0 then
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', EVENTS_KEPT, '*', 'e', kind, unpack(pairs_))
  end
end

-- Wakes one idle worker.
local function notify()
  redis.call('LPUSH', K_NOTIFY, '1')
  redis.call('LTRIM', K_NOTIFY, 0, 0)
end

-- Deletes everything of these jobs but their place in a state (the caller removes that).
local function purge(ids)
  if #ids == 0 then
    return
  end
  for _, k in ipairs({K_JOBS, K_ATT, K_STALLS, K_RET, K_ERR, K_PRI, K_PROGRESS, K_FRESH}) do
    each('HDEL', k, ids)
  end
  local logs = {}
  for i, id in ipairs(ids) do
    logs[i] = BASE .. 'log:' .. id
  end
  for s = 1, #logs, 1000 do
    redis.call('DEL', unpack(logs, s, math.min(s + 999, #logs)))
  end
end

-- Puts ids back to waiting: prioritized ones by their priority, the others at the far end
-- (`front` true: taken next).
local function to_waiting(ids, front)
  if #ids == 0 then
    return
  end
  local pris = redis.call('HMGET', K_PRI, unpack(ids))
  local plain = {}
  for i, id in ipairs(ids) do
    if pris[i] then
      local seq = redis.call('INCR', K_SEQ) % PRIO_UNIT
      redis.call('ZADD', K_PRIO, tonumber(pris[i]) * PRIO_UNIT + seq, id)
    else
      plain[#plain + 1] = id
    end
  end
  if #plain > 0 then
    each(front and 'RPUSH' or 'LPUSH', K_WAIT, plain)
  end
  notify()
end

-- Trims a finished set (done or failed) to `keep` jobs (-1: no count) and `age_ms` (-1: no
-- age), removing the oldest with all their data.
local function trim(zset, keep, age_ms, now)
  local old = {}
  if age_ms >= 0 then
    old = redis.call('ZRANGEBYSCORE', zset, '-inf', now - age_ms, 'LIMIT', 0, 1000)
    each('ZREM', zset, old)
    purge(old)
  end
  if keep >= 0 then
    local over = redis.call('ZCARD', zset) - keep
    if over > 0 then
      old = redis.call('ZRANGE', zset, 0, over - 1)
      each('ZREM', zset, old)
      purge(old)
    end
  end
end
