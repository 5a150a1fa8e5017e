--[[
  Adds a standard job (no delay, no priority) where the queue's layout expects it. Keel's own
  script, written from BullMQ's documented behaviour (shared/BULLMQ.md §4.1, §4.4, §7.4), for
  the two cases bullmq-official's BullMQ 6 script cannot serve:
  - a queue in BullMQ 5's layout (a Node BullMQ 5 client uses it): while paused, its jobs wait
    in the `paused` list, and v5's resume renames that list over `wait`, so a job pushed onto
    `wait` meanwhile would be lost;
  - options bullmq-official cannot store (the backoff's `jitter`), passed here as JSON.

  KEYS[1] meta hash          KEYS[2] id counter        KEYS[3] wait list
  KEYS[4] paused list        KEYS[5] marker zset       KEYS[6] events stream
  KEYS[7] active list

  ARGV[1] job key prefix ("<prefix>:<queue>:")
  ARGV[2] custom job id, or "" for a generated one
  ARGV[3] job name           ARGV[4] data (JSON)       ARGV[5] opts (JSON)
  ARGV[6] timestamp (ms)     ARGV[7] "1" to add at the front (lifo)
  ARGV[8] deduplication id, or ""                      ARGV[9] deduplication ttl (ms), "0" none

  The queue is in BullMQ 5's layout when its meta `version` is a BullMQ 5 one (`bullmq:5.…`,
  written by Node BullMQ 5's Queue) or a `paused` list exists.

  Returns the job id: the new one, or the existing job's for a known custom id or a held
  deduplication id (nothing written then but the events BullMQ writes).
]]
local meta, idKey, wait, paused, marker, events, active =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local prefix, customId, name, data, opts, timestamp, lifo, dedupId, dedupTtl =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])

local maxEvents = redis.call("HGET", meta, "opts.maxLenEvents")
if not maxEvents then
  maxEvents = 10000
  redis.call("HSET", meta, "opts.maxLenEvents", maxEvents)
end

-- BullMQ counts every add attempt, custom ids and duplicates included.
local counter = redis.call("INCR", idKey)
local jobId = customId
if jobId == "" then
  jobId = tostring(counter)
end
local jobKey = prefix .. jobId

if customId ~= "" and redis.call("EXISTS", jobKey) == 1 then
  redis.call("XADD", events, "MAXLEN", "~", maxEvents, "*", "event", "duplicated", "jobId", jobId)
  return jobId
end

if dedupId ~= "" then
  local dedupKey = prefix .. "de:" .. dedupId
  local set
  if dedupTtl > 0 then
    set = redis.call("SET", dedupKey, jobId, "PX", dedupTtl, "NX")
  else
    set = redis.call("SET", dedupKey, jobId, "NX")
  end
  if not set then
    local holder = redis.call("GET", dedupKey)
    redis.call("XADD", events, "MAXLEN", "~", maxEvents, "*", "event", "debounced",
      "jobId", holder, "debounceId", dedupId)
    redis.call("XADD", events, "MAXLEN", "~", maxEvents, "*", "event", "deduplicated",
      "jobId", holder, "deduplicationId", dedupId, "deduplicatedJobId", jobId)
    return holder
  end
end

local fields = {"name", name, "data", data, "opts", opts, "timestamp", timestamp,
  "delay", "0", "priority", "0"}
if dedupId ~= "" then
  table.insert(fields, "deid")
  table.insert(fields, dedupId)
end
redis.call("HSET", jobKey, unpack(fields))
redis.call("XADD", events, "*", "event", "added", "jobId", jobId, "name", name)

-- Where it waits: `paused` for a paused v5-layout queue, else `wait` (BullMQ 6 keeps paused
-- jobs there). No wake-up marker while paused or at the global concurrency.
local state = redis.call("HMGET", meta, "paused", "concurrency", "version")
local isPaused = state[1] ~= false
local target = wait
if isPaused then
  local v5 = (state[3] and string.sub(state[3], 1, 9) == "bullmq:5.")
    or redis.call("EXISTS", paused) == 1
  if v5 then
    target = paused
  end
end
if lifo == "1" then
  redis.call("RPUSH", target, jobId)
else
  redis.call("LPUSH", target, jobId)
end
local maxed = state[2] and redis.call("LLEN", active) >= tonumber(state[2])
if not isPaused and not maxed then
  redis.call("ZADD", marker, 0, "0")
end
redis.call("XADD", events, "MAXLEN", "~", maxEvents, "*", "event", "waiting", "jobId", jobId)
return jobId
