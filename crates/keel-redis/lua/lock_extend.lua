--[[
  Extends a lock's lease only if the caller still holds it (compare and expire).

  KEYS[1] the lock key
  ARGV[1] the holder's token   ARGV[2] new lease (ms)

  Returns 1 when extended, 0 when held by someone else or expired.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
