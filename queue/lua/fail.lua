-- fail: record a failed attempt (fenced by token): retry later with exponential backoff
-- and jitter, or dead-letter once maxAttempts is reached or the error is not retryable.
-- KEYS[1] meta, KEYS[2] running, KEYS[3] delayed, KEYS[4] att, KEYS[5] dead, KEYS[6] errors,
-- KEYS[7] items, KEYS[8] seen, KEYS[9] calls, KEYS[10] results, KEYS[11] resultsIdx,
-- KEYS[12] started, KEYS[13] wake, KEYS[14] workers
-- ARGV[1] version, ARGV[2] epoch, then sextuples: member, error JSON, retryable (1|0),
--   random number in [0,1) for jitter (Lua's PRNG is seeded identically in every script),
--   reply MAC ('' = unsigned), ms to keep a call's dead letter (0 = not a call)
-- returns {retried, deadLettered, then the members whose lease was lost}
-- Replies: when meta field `notify` is set (see complete.lua), each dead-lettered item whose
-- id is "call:<client>:<n>" is announced on "<prefix>:{ns/name}:reply:<client>" as a line
-- "e<TAB>id<TAB>MAC<TAB>attempts<TAB>error JSON"; retries announce nothing. A dead-lettered
-- call with a keep time is indexed in `calls` (see tb_expire_calls).
-- Wake-ups: a retry wakes one idle worker to learn its due time; the last item of a closed
-- batch wakes every one.
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, running, delayed, att, dead, errors = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local cfg = redis.call('HMGET', meta, 'maxAttempts', 'backoffInitialMs', 'backoffFactor', 'backoffMaxMs', 'backoffJitter')
local maxAttempts, initialMs, factor, maxMs, jitter = tonumber(cfg[1]), tonumber(cfg[2]), tonumber(cfg[3]), tonumber(cfg[4]), tonumber(cfg[5])
local now = tb_now_ms()
local retried, deadCount, gone = 0, 0, {}
local notify = redis.call('HGET', meta, 'notify')
local replyLines, replyChannels, kept = {}, {}, 0
for i = 3, #ARGV, 6 do
  local member, err, retryable, rand = ARGV[i], ARGV[i + 1], ARGV[i + 2] == '1', tonumber(ARGV[i + 3])
  if redis.call('ZREM', running, member) == 1 then
    local id = tb_member_id(member)
    redis.call('HDEL', KEYS[12], id)
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
      local keep = tonumber(ARGV[i + 5])
      if keep > 0 then
        redis.call('ZADD', KEYS[9], now + keep, id)
        kept = kept + 1
      end
      if notify and string.sub(id, 1, 5) == 'call:' then
        local colon = string.find(id, ':', 6, true)
        if colon then
          local channel = string.sub(meta, 1, #meta - 4) .. 'reply:' .. string.sub(id, 6, colon - 1)
          if not replyLines[channel] then
            replyLines[channel] = {}
            replyChannels[#replyChannels + 1] = channel
          end
          local l = replyLines[channel]
          l[#l + 1] = 'e\t' .. id .. '\t' .. ARGV[i + 4] .. '\t' .. attempts .. '\t' .. err
        end
      end
    end
  else
    gone[#gone + 1] = member
  end
end
if retried + deadCount > 0 then redis.call('HINCRBY', meta, 'running', -(retried + deadCount)) end
tb_changed(meta, retried + deadCount)
if retried > 0 then
  redis.call('HINCRBY', meta, 'delayed', retried)
  redis.call('HINCRBY', meta, 'retries', retried)
end
if deadCount > 0 then
  redis.call('HINCRBY', meta, 'failed', deadCount)
  tb_wake_if_done(meta, KEYS[13], KEYS[14])
end
if retried > 0 then tb_nudge(KEYS[13]) end
local publish = notify == 's' and 'SPUBLISH' or 'PUBLISH'
for j = 1, #replyChannels do
  redis.call(publish, replyChannels[j], table.concat(replyLines[replyChannels[j]], '\n'))
end
if kept > 0 then tb_expire_calls(KEYS[9], KEYS[8], KEYS[7], dead, att, KEYS[10], KEYS[11], now, 2 * kept + 10) end
local out = {retried, deadCount}
for i = 1, #gone do out[#out + 1] = gone[i] end
return out
