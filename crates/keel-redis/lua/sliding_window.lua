--[[
  Rate limit, sliding window over two fixed buckets (current and previous, weighted by the
  overlap): approximate, one hash per key.
  Runs after redis_now.lua (prepended at load), which sets `now` to Redis's clock in µs.

  KEYS[1] the limiter's key (hash: w = window index, c = current count, p = previous count)
  ARGV[1] limit   ARGV[2] window (ms)   ARGV[3] cost

  Returns {allowed (1 or 0), remaining, reset after (ms), retry after (ms, 0 when allowed)}.
]]
local limit, w, cost = tonumber(ARGV[1]), math.max(tonumber(ARGV[2]) * 1000, 1), tonumber(ARGV[3])
local idx = math.floor(now / w)
local elapsed = now - idx * w
local st = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local cur, prev = 0, 0
if st[1] then
  local sw = tonumber(st[1])
  if sw == idx then cur = tonumber(st[2]); prev = tonumber(st[3])
  elseif sw + 1 == idx then prev = tonumber(st[2]) end
end
local est = math.floor(prev * (w - elapsed) / w) + cur
local until_end = math.max(math.ceil((w - elapsed) / 1000), 1)
if est + cost > limit then
  local retry = w - elapsed
  if cur + cost <= limit and prev > 0 then
    local allowed_prev = limit - cur - cost
    retry = math.max(w - math.floor(allowed_prev * w / prev) - elapsed, 1)
  end
  return {0, math.max(limit - est, 0), until_end, math.max(math.ceil(retry / 1000), 1)}
end
redis.call('HSET', KEYS[1], 'w', string.format('%.0f', idx), 'c', cur + cost, 'p', prev)
redis.call('PEXPIRE', KEYS[1], math.ceil((w - elapsed + w) / 1000))
return {1, limit - est - cost, until_end, 0}
