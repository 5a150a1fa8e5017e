--[[
  Takes a lock if free and hands out the next fencing token.

  KEYS[1] the lock key   KEYS[2] its fence counter
  ARGV[1] the holder's random token   ARGV[2] lease (ms)

  Returns the fence (rises with every acquire), or nil when the lock is held.
]]
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('INCR', KEYS[2])
end
return false
