-- fail: record a failed attempt (fenced by token): retry later with exponential backoff
-- and jitter, or dead-letter once maxAttempts is reached or the error is not retryable.
-- KEYS[1] meta, KEYS[2] running, KEYS[3] delayed, KEYS[4] att, KEYS[5] dead, KEYS[6] errors,
-- KEYS[7] started
-- ARGV[1] version, ARGV[2] epoch, then quads: member, error JSON, retryable (1|0),
--   random number in [0,1) for jitter (Lua's PRNG is seeded identically in every script)
-- returns {retried, deadLettered, then the members whose lease was lost}
-- Replies: when meta field `notify` is set (see complete.lua), each dead-lettered item whose
-- id is "call:<client>:<n>" is announced on "<prefix>:{ns/name}:reply:<client>" as a line
-- "e<TAB>id<TAB>dead-letter record JSON" ({attempts, failedAt, error}); retries announce nothing.
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, running, delayed, att, dead, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cfg = redis.call('HMGET', meta, 'maxAttempts', 'backoffInitialMs', 'backoffFactor', 'backoffMaxMs', 'backoffJitter')
local maxAttempts, initialMs, factor, maxMs, jitter = tonumber(cfg[1]), tonumber(cfg[2]), tonumber(cfg[3]), tonumber(cfg[4]), tonumber(cfg[5])
local now = tb_now_ms()
local retried, deadCount, gone = 0, 0, {}
local notify = redis.call('HGET', meta, 'notify')
local replyLines, replyChannels = {}, {}
for i = 3, #ARGV, 4 do
  local member, err, retryable, rand = ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1', tonumber(ARGV[i + 3])
  if redis.call('ZREM', running, member) == 1 then
    local id = tb_member_id(member)
    redis.call('HDEL', KEYS[7], id)
    local attempts = redis.call('HINCRBY', att, id, 1)
    if retryable and attempts < maxAttempts then
      local delay = math.min(maxMs, initialMs * factor ^ (attempts - 1))
      delay = math.floor(delay * (1 - jitter) + delay * jitter * rand)
      redis.call('ZADD', delayed, now + delay, id)
      redis.call('HSET', errors, id, err)
      retried = retried + 1
    else
      local record = tb_dead_record(attempts, now, err)
      redis.call('HSET', dead, id, record)
      redis.call('HDEL', errors, id)
      deadCount = deadCount + 1
      if notify and string.sub(id, 1, 5) == 'call:' then
        local colon = string.find(id, ':', 6, true)
        if colon then
          local channel = string.sub(meta, 1, #meta - 4) .. 'reply:' .. string.sub(id, 6, colon - 1)
          if not replyLines[channel] then
            replyLines[channel] = {}
            replyChannels[#replyChannels + 1] = channel
          end
          local l = replyLines[channel]
          l[#l + 1] = 'e\t' .. id .. '\t' .. record
        end
      end
    end
  else
    gone[#gone + 1] = member
  end
end
if retried + deadCount > 0 then redis.call('HINCRBY', meta, 'running', -(retried + deadCount)) end
if retried > 0 then
  redis.call('HINCRBY', meta, 'delayed', retried)
  redis.call('HINCRBY', meta, 'retries', retried)
end
if deadCount > 0 then redis.call('HINCRBY', meta, 'failed', deadCount) end
local publish = notify == 's' and 'SPUBLISH' or 'PUBLISH'
for j = 1, #replyChannels do
  redis.call(publish, replyChannels[j], table.concat(replyLines[replyChannels[j]], '\n'))
end
local out = {retried, deadCount}
for i = 1, #gone do out[#out + 1] = gone[i] end
return out
