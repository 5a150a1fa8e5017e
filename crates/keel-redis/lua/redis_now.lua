-- Redis's clock in microseconds as `now`: prepended to every rate-limit script (rate limits
-- are timed by Redis, never by the clients' clocks).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
