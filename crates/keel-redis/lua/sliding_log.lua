--[[
  Rate limit, exact sliding log: one sorted-set member per admitted unit, scored by its time.
  Runs after redis_now.lua (prepended at load), which sets `now` to Redis's clock in µs.

  KEYS[1] the limiter's key (zset)
  ARGV[1] limit   ARGV[2] window (ms)   ARGV[3] cost   ARGV[4] nonce (members' unique part)

  Returns {allowed (1 or 0), remaining, reset after (ms), retry after (ms, 0 when allowed)}.
]]
local limit, window_ms, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local w = window_ms * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - w))
local count = redis.call('ZCARD', KEYS[1])
if count + cost > limit then
  local retry = w
  if cost <= limit then
    local i = count + cost - limit - 1
    local e = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
    retry = math.max(tonumber(e[2]) + w - now, 0)
  end
  local reset = 0
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then reset = math.max(tonumber(last[2]) + w - now, 0) end
  return {0, math.max(limit - count, 0), math.max(math.ceil(reset / 1000), 1), math.max(math.ceil(retry / 1000), 1)}
end
local score = string.format('%.0f', now)
for i = 1, cost do redis.call('ZADD', KEYS[1], score, ARGV[4] .. ':' .. i) end
redis.call('PEXPIRE', KEYS[1], math.max(window_ms, 1))
return {1, limit - count - cost, math.max(window_ms, 1), 0}
