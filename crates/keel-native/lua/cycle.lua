--[[ cycle: a worker's one round trip — finishes the attempts that ended, moves due delayed
jobs to waiting, and takes up to `want` jobs, leasing them to the worker.
KEYS: the queue's keys (prelude).
ARGV[1] token (the worker's)  ARGV[2] lease ms  ARGV[3] want
ARGV[4] completed jobs kept (count, -1 = no count)  ARGV[5] their age ms (-1 = no age)
ARGV[6] failed jobs kept (count, -1 = no count)  ARGV[7] their age ms (-1 = no age)
ARGV[8] acks; then four values an ack: id, lease (as taken), outcome, value — 'c' completed
and removed (value unused), 'k' completed and kept (the return value), 'r' retried (the delay
ms; an attempt counted), 'd' delayed (the delay ms; no attempt counted), 'f' failed (the error,
JSON)
Returns: acks applied (an attempt whose lease was recovered meanwhile is not), the earliest
delayed time (-1: none), the ms until the queue's rate limit admits jobs again (0: not
limited), then six values a taken job: id, job, attempts made, times stalled, stalls not
reported before (each stall is reported to one attempt), and the lease: `<token>:<n>`, one a
take, so a job taken twice by one worker has two leases and only the current one's
acknowledgement counts.
]]
local now, token = redis_now(), ARGV[1]
local lease, want = tonumber(ARGV[2]), tonumber(ARGV[3])
local keep_done, age_done = tonumber(ARGV[4]), tonumber(ARGV[5])
local keep_failed, age_failed = tonumber(ARGV[6]), tonumber(ARGV[7])
local nacks = tonumber(ARGV[8])

-- 1. Acks: only those whose lease is still this worker's.
local applied = 0
if nacks > 0 then
  local ids = {}
  for i = 0, nacks - 1 do
    ids[#ids + 1] = ARGV[9 + i * 4]
  end
  local owners = redis.call('HMGET', K_OWNER, unpack(ids))
  local mine, removed, retried_now = {}, {}, {}
  local done_args, ret_args, failed_args, err_args, delayed_args = {}, {}, {}, {}, {}
  local ev_done, ev_failed, ev_delayed = {}, {}, {}
  for i = 0, nacks - 1 do
    if owners[i + 1] == ARGV[10 + i * 4] then
      local id, kind, value = ARGV[9 + i * 4], ARGV[11 + i * 4], ARGV[12 + i * 4]
      mine[#mine + 1] = id
      if kind == 'c' then
        removed[#removed + 1] = id
        ev_done[#ev_done + 1] = id
        ev_done[#ev_done + 1] = ''
      elseif kind == 'k' then
        done_args[#done_args + 1] = now
        done_args[#done_args + 1] = id
        ret_args[#ret_args + 1] = id
        ret_args[#ret_args + 1] = value
        ev_done[#ev_done + 1] = id
        ev_done[#ev_done + 1] = value
      elseif kind == 'r' or kind == 'd' then
        if kind == 'r' then
          redis.call('HINCRBY', K_ATT, id, 1)
        end
        local delay = tonumber(value)
        if delay > 0 then
          delayed_args[#delayed_args + 1] = now + delay
          delayed_args[#delayed_args + 1] = id
          ev_delayed[#ev_delayed + 1] = id
          ev_delayed[#ev_delayed + 1] = tostring(now + delay)
        else
          retried_now[#retried_now + 1] = id
        end
      else
        redis.call('HINCRBY', K_ATT, id, 1)
        failed_args[#failed_args + 1] = now
        failed_args[#failed_args + 1] = id
        err_args[#err_args + 1] = id
        err_args[#err_args + 1] = value
        ev_failed[#ev_failed + 1] = id
        ev_failed[#ev_failed + 1] = value
      end
    end
  end
  applied = #mine
  if applied > 0 then
    each('ZREM', K_ACTIVE, mine)
    each('HDEL', K_OWNER, mine)
    if redis.call('HEXISTS', K_META, 'gc') == 1 then
      -- Room under the queue's global concurrency: wake a worker idle at the limit.
      notify()
    end
  end
  if #removed > 0 then
    purge(removed)
  end
  if #done_args > 0 then
    each('ZADD', K_DONE, done_args)
    each('HSET', K_RET, ret_args)
    trim(K_DONE, keep_done, age_done, now)
  end
  if #delayed_args > 0 then
    each('ZADD', K_DELAYED, delayed_args)
  end
  to_waiting(retried_now, false)
  if #failed_args > 0 then
    each('ZADD', K_FAILED, failed_args)
    each('HSET', K_ERR, err_args)
    trim(K_FAILED, keep_failed, age_failed, now)
  end
  event('completed', ev_done)
  event('failed', ev_failed)
  event('delayed', ev_delayed)
end

-- 2. Due delayed jobs (and retries) to waiting, a bounded number a call.
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  each('ZREM', K_DELAYED, due)
  to_waiting(due, false)
  local ev = {}
  for _, id in ipairs(due) do
    ev[#ev + 1] = id
    ev[#ev + 1] = ''
  end
  event('waiting', ev)
end

-- 3. Take: waiting first, then prioritized; nothing while paused or rate limited, and no more
-- than the global concurrency leaves room for.
local out = {applied, -1, 0}
local next_delayed = redis.call('ZRANGE', K_DELAYED, 0, 0, 'WITHSCORES')
if next_delayed[2] then
  out[2] = tonumber(next_delayed[2])
end
if want <= 0 then
  return out
end
local meta = redis.call('HMGET', K_META, 'paused', 'rl_max', 'rl_ms', 'gc')
if meta[1] then
  return out
end
local capped = false
local gc = tonumber(meta[4])
if gc then
  local room = gc - redis.call('ZCARD', K_ACTIVE)
  if room <= 0 then
    return out
  end
  capped = room <= want
  want = math.min(want, room)
end
local rl_max, rl_ms = tonumber(meta[2]), tonumber(meta[3]) or 1000
if rl_max then
  local used = tonumber(redis.call('GET', K_LIMITER) or '0')
  if used >= rl_max then
    local ttl = redis.call('PTTL', K_LIMITER)
    if ttl < 0 then
      -- A window without its expiry (never left so): give it one.
      redis.call('PEXPIRE', K_LIMITER, rl_ms)
      ttl = rl_ms
    end
    out[3] = ttl
    return out
  end
  want = math.min(want, rl_max - used)
end
local taken = redis.call('RPOP', K_WAIT, want) or {}
if #taken < want then
  local p = redis.call('ZPOPMIN', K_PRIO, want - #taken)
  for i = 1, #p, 2 do
    taken[#taken + 1] = p[i]
  end
end
if #taken == 0 then
  return out
end
if rl_max then
  redis.call('INCRBY', K_LIMITER, #taken)
  if redis.call('PTTL', K_LIMITER) < 0 then
    redis.call('PEXPIRE', K_LIMITER, rl_ms)
  end
end
local deadline = now + lease
local take = token .. ':' .. redis.call('INCR', K_SEQ) .. ':'
local active_args, owner_args, ev = {}, {}, {}
for i, id in ipairs(taken) do
  active_args[#active_args + 1] = deadline
  active_args[#active_args + 1] = id
  owner_args[#owner_args + 1] = id
  owner_args[#owner_args + 1] = take .. i
  ev[#ev + 1] = id
  ev[#ev + 1] = ''
end
each('ZADD', K_ACTIVE, active_args)
each('HSET', K_OWNER, owner_args)
event('active', ev)
local jobs = redis.call('HMGET', K_JOBS, unpack(taken))
local att = redis.call('HMGET', K_ATT, unpack(taken))
local st = redis.call('HMGET', K_STALLS, unpack(taken))
local fresh = redis.call('HMGET', K_FRESH, unpack(taken))
local reported = {}
for i, id in ipairs(taken) do
  out[#out + 1] = id
  out[#out + 1] = jobs[i]
  out[#out + 1] = att[i] or '0'
  out[#out + 1] = st[i] or '0'
  out[#out + 1] = fresh[i] or '0'
  out[#out + 1] = take .. i
  if fresh[i] then
    reported[#reported + 1] = id
  end
end
each('HDEL', K_FRESH, reported)
-- More remain (and room for them): wake another idle worker.
if #taken == want and not capped and (redis.call('LLEN', K_WAIT) > 0 or redis.call('ZCARD', K_PRIO) > 0) then
  notify()
end
return out
