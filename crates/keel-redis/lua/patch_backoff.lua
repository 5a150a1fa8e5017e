--[[
  Writes a job's backoff as BullMQ stores it, `{"type", "delay", "jitter"}`, into the opts of
  a job just added through bullmq-official (whose options have no jitter field). Guarded: a
  job that no longer exists (completed and removed meanwhile) is not brought back.

  KEYS[1] job hash
  ARGV[1] backoff (JSON object)

  Returns 1 when written, 0 when the job is gone.
]]
local opts = redis.call("HGET", KEYS[1], "opts")
if not opts then
  return 0
end
local decoded = cjson.decode(opts)
decoded["backoff"] = cjson.decode(ARGV[1])
redis.call("HSET", KEYS[1], "opts", cjson.encode(decoded))
return 1
