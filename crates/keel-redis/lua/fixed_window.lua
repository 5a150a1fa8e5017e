--[[
  Rate limit, fixed windows aligned to the epoch (a day is a UTC day).
  Runs after redis_now.lua (prepended at load), which sets `now` to Redis's clock in µs.

  KEYS[1] the limiter's key (hash: w = window index, c = count)
  ARGV[1] limit   ARGV[2] window (ms)   ARGV[3] cost

  Returns {allowed (1 or 0), remaining, reset after (ms), retry after (ms, 0 when allowed)}.
]]
local limit, w, cost = tonumber(ARGV[1]), math.max(tonumber(ARGV[2]) * 1000, 1), tonumber(ARGV[3])
local idx = math.floor(now / w)
local until_end = math.max(math.ceil((w - (now - idx * w)) / 1000), 1)
local st = redis.call('HMGET', KEYS[1], 'w', 'c')
local count = 0
if st[1] and tonumber(st[1]) == idx then count = tonumber(st[2]) end
if count + cost > limit then
  return {0, math.max(limit - count, 0), until_end, until_end}
end
redis.call('HSET', KEYS[1], 'w', string.format('%.0f', idx), 'c', count + cost)
redis.call('PEXPIRE', KEYS[1], until_end)
return {1, limit - count - cost, until_end, 0}
