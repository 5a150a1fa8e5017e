--[[
  Releases a lock only if the caller still holds it (compare and delete).

  KEYS[1] the lock key
  ARGV[1] the holder's token

  Returns 1 when released, 0 when held by someone else or expired.
]]
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
