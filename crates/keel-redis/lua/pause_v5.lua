--[[
  Pauses or resumes a queue in BullMQ 5's layout the way BullMQ 5 does, so that Node BullMQ 5
  clients beside Keel lose nothing: pause moves `wait` to `paused`; resume moves every job of
  `paused` back (renaming the list when `wait` is empty, appending behind `wait` otherwise —
  never renaming over it, which would drop what `wait` holds).

  KEYS[1] wait   KEYS[2] paused   KEYS[3] meta   KEYS[4] prioritized   KEYS[5] marker
  KEYS[6] events KEYS[7] delayed
  ARGV[1] "paused" or "resumed"

  Returns the number of jobs moved.
]]
local wait, paused, meta, prioritized, marker, events, delayed =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local moved = 0
if ARGV[1] == "paused" then
  moved = redis.call("LLEN", wait)
  if moved > 0 then
    if redis.call("EXISTS", paused) == 1 then
      -- Jobs already parked (added by a v5 client): keep them, older ones at the tail.
      while redis.call("LMOVE", wait, paused, "RIGHT", "LEFT") do end
    else
      redis.call("RENAME", wait, paused)
    end
  end
  redis.call("HSET", meta, "paused", 1)
  redis.call("DEL", marker)
else
  moved = redis.call("LLEN", paused)
  if moved > 0 then
    if redis.call("EXISTS", wait) == 0 then
      redis.call("RENAME", paused, wait)
    else
      -- Behind what waits already: the oldest paused job (the tail) becomes the new head.
      while redis.call("LMOVE", paused, wait, "RIGHT", "LEFT") do end
    end
  end
  redis.call("HDEL", meta, "paused")
  if moved > 0 or redis.call("ZCARD", prioritized) > 0 then
    redis.call("ZADD", marker, 0, "0")
  else
    local first = redis.call("ZRANGE", delayed, 0, 0, "WITHSCORES")
    if first[2] then
      redis.call("ZADD", marker, math.floor(tonumber(first[2]) / 4096), "1")
    end
  end
end
redis.call("XADD", events, "*", "event", ARGV[1])
return moved
