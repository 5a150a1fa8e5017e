--[[ cycle: a worker's one round trip — finishes the attempts that ended, moves due delayed
jobs to waiting, and takes up to `want` jobs, leasing them to the worker.
KEYS[1] jobs  KEYS[2] wait  KEYS[3] prio  KEYS[4] delayed  KEYS[5] active (zset: id -> lease
deadline ms)  KEYS[6] owner (hash: id -> the lease's token)  KEYS[7] att (hash: id -> attempts
made, when > 0)  KEYS[8] stalls (hash: id -> times stalled, when > 0)  KEYS[9] done (zset:
kept completed ids -> finish time)  KEYS[10] ret (hash: id -> return value)  KEYS[11] failed
(zset: id -> finish time)  KEYS[12] err (hash: id -> the error)  KEYS[13] pri  KEYS[14] meta
(hash: `paused`)  KEYS[15] notify  KEYS[16] seq
ARGV[1] now  ARGV[2] token (the worker's)  ARGV[3] lease ms  ARGV[4] want  ARGV[5] completed
jobs kept (count, -1 = all)  ARGV[6] failed jobs kept (count, -1 = all)  ARGV[7] acks; then
three values an ack: id, outcome, value — 'c' completed and removed (value unused), 'k'
completed and kept (the return value), 'r' retried (the delay ms; an attempt counted), 'd'
delayed (the delay ms; no attempt counted), 'f' failed (the error)
Returns: acks applied (a lease lost to stall recovery is not), the earliest delayed time (or
-1), then four values a taken job: id, job, attempts made, times stalled.
]]
local now, token = tonumber(ARGV[1]), ARGV[2]
local lease, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local keep_done, keep_failed = tonumber(ARGV[5]), tonumber(ARGV[6])
local nacks = tonumber(ARGV[7])

local function each(cmd, key, ids)
  for s = 1, #ids, 1000 do
    redis.call(cmd, key, unpack(ids, s, math.min(s + 999, #ids)))
  end
end

-- 1. Acks: only those whose lease is still this worker's.
local applied = 0
if nacks > 0 then
  local ids = {}
  for i = 0, nacks - 1 do
    ids[#ids + 1] = ARGV[8 + i * 3]
  end
  local owners = redis.call('HMGET', KEYS[6], unpack(ids))
  local mine, removed, retried_now = {}, {}, {}
  local done_args, ret_args, failed_args, err_args, delayed_args = {}, {}, {}, {}, {}
  for i = 0, nacks - 1 do
    if owners[i + 1] == token then
      local id, kind, value = ARGV[8 + i * 3], ARGV[9 + i * 3], ARGV[10 + i * 3]
      mine[#mine + 1] = id
      if kind == 'c' then
        removed[#removed + 1] = id
      elseif kind == 'k' then
        done_args[#done_args + 1] = now
        done_args[#done_args + 1] = id
        ret_args[#ret_args + 1] = id
        ret_args[#ret_args + 1] = value
      elseif kind == 'r' or kind == 'd' then
        if kind == 'r' then
          redis.call('HINCRBY', KEYS[7], id, 1)
        end
        local delay = tonumber(value)
        if delay > 0 then
          delayed_args[#delayed_args + 1] = now + delay
          delayed_args[#delayed_args + 1] = id
        else
          retried_now[#retried_now + 1] = id
        end
      else
        redis.call('HINCRBY', KEYS[7], id, 1)
        failed_args[#failed_args + 1] = now
        failed_args[#failed_args + 1] = id
        err_args[#err_args + 1] = id
        err_args[#err_args + 1] = value
      end
    end
  end
  applied = #mine
  if applied > 0 then
    each('ZREM', KEYS[5], mine)
    each('HDEL', KEYS[6], mine)
  end
  if #removed > 0 then
    each('HDEL', KEYS[1], removed)
    each('HDEL', KEYS[7], removed)
    each('HDEL', KEYS[8], removed)
    each('HDEL', KEYS[13], removed)
  end
  if #done_args > 0 then
    each('ZADD', KEYS[9], done_args)
    each('HSET', KEYS[10], ret_args)
  end
  if #delayed_args > 0 then
    each('ZADD', KEYS[4], delayed_args)
  end
  if #retried_now > 0 then
    each('LPUSH', KEYS[2], retried_now)
  end
  if #failed_args > 0 then
    each('ZADD', KEYS[11], failed_args)
    each('HSET', KEYS[12], err_args)
  end
  -- Retention by count: the oldest finished jobs beyond the count go, with everything theirs.
  local function trim(zset, value_hash, keep)
    local over = redis.call('ZCARD', zset) - keep
    if over > 0 then
      local old = redis.call('ZRANGE', zset, 0, over - 1)
      each('ZREM', zset, old)
      each('HDEL', value_hash, old)
      each('HDEL', KEYS[1], old)
      each('HDEL', KEYS[7], old)
      each('HDEL', KEYS[8], old)
      each('HDEL', KEYS[13], old)
    end
  end
  if #done_args > 0 and keep_done >= 0 then
    trim(KEYS[9], KEYS[10], keep_done)
  end
  if #failed_args > 0 and keep_failed >= 0 then
    trim(KEYS[11], KEYS[12], keep_failed)
  end
end

-- 2. Due delayed jobs (and retries) to waiting, a bounded number a call.
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 1000)
if #due > 0 then
  each('ZREM', KEYS[4], due)
  local pris = redis.call('HMGET', KEYS[13], unpack(due))
  local plain = {}
  for i, id in ipairs(due) do
    if pris[i] then
      local seq = redis.call('INCR', KEYS[16]) % 4294967296
      redis.call('ZADD', KEYS[3], tonumber(pris[i]) * 4294967296 + seq, id)
    else
      plain[#plain + 1] = id
    end
  end
  if #plain > 0 then
    each('LPUSH', KEYS[2], plain)
  end
end

-- 3. Take: waiting first, then prioritized; nothing while paused.
local out = {applied, -1}
local next_delayed = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
if next_delayed[2] then
  out[2] = tonumber(next_delayed[2])
end
if want <= 0 or redis.call('HEXISTS', KEYS[14], 'paused') == 1 then
  return out
end
local taken = redis.call('RPOP', KEYS[2], want) or {}
if #taken < want then
  local p = redis.call('ZPOPMIN', KEYS[3], want - #taken)
  for i = 1, #p, 2 do
    taken[#taken + 1] = p[i]
  end
end
if #taken == 0 then
  return out
end
local deadline = now + lease
local active_args, owner_args = {}, {}
for _, id in ipairs(taken) do
  active_args[#active_args + 1] = deadline
  active_args[#active_args + 1] = id
  owner_args[#owner_args + 1] = id
  owner_args[#owner_args + 1] = token
end
each('ZADD', KEYS[5], active_args)
each('HSET', KEYS[6], owner_args)
local jobs = redis.call('HMGET', KEYS[1], unpack(taken))
local att = redis.call('HMGET', KEYS[7], unpack(taken))
local st = redis.call('HMGET', KEYS[8], unpack(taken))
for i, id in ipairs(taken) do
  out[#out + 1] = id
  out[#out + 1] = jobs[i]
  out[#out + 1] = att[i] or '0'
  out[#out + 1] = st[i] or '0'
end
-- More remain: wake another idle worker.
if #taken == want and (redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0) then
  redis.call('LPUSH', KEYS[15], '1')
  redis.call('LTRIM', KEYS[15], 0, 0)
end
return out
