--[[
  Counts a job's stalls once: BullMQ's stall counter (`stc`, raised by the stalled check each
  time the job's worker died or lost its lock) against the number Keel has already reported
  (`kstc`, Keel's own field). Called when a worker takes a job whose `stc` is above 0.

  KEYS[1] job hash

  Returns how many stalls are new (0 when another worker reported them already).
]]
local stc = tonumber(redis.call("HGET", KEYS[1], "stc") or "0")
local seen = tonumber(redis.call("HGET", KEYS[1], "kstc") or "0")
if stc > seen then
  redis.call("HSET", KEYS[1], "kstc", stc)
  return stc - seen
end
return 0
