--[[
  Adds to a counter; a counter this call creates expires after the given time.

  KEYS[1] the counter
  ARGV[1] increment   ARGV[2] time to live (ms), or "" for none

  Returns the new value.
]]
local existed = redis.call('EXISTS', KEYS[1])
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
