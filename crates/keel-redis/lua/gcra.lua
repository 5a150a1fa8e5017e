--[[
  Rate limit, generic cell rate algorithm: one key holds the theoretical arrival time (µs).
  Runs after redis_now.lua (prepended at load), which sets `now` to Redis's clock in µs.

  KEYS[1] the limiter's key
  ARGV[1] limit (requests per period)   ARGV[2] period (ms)   ARGV[3] burst   ARGV[4] cost

  Returns {allowed (1 or 0), remaining, reset after (ms), retry after (ms, 0 when allowed)}.
]]
local limit, period, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = math.max(math.floor(period * 1000 / math.max(limit, 1)), 1)
local tolerance = interval * math.max(burst, 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if now < allow_at then
  local rem = math.floor(math.max(now - (tat - tolerance), 0) / interval)
  return {0, math.min(rem, burst), math.ceil((tat - now) / 1000), math.max(math.ceil((allow_at - now) / 1000), 1)}
end
local rem = math.floor((now - (new_tat - tolerance)) / interval)
local keep = math.max(math.ceil((new_tat - now) / 1000), 1)
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', keep)
return {1, math.min(rem, burst), keep, 0}
