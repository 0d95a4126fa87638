-- complete: record items as succeeded (fenced by token), free their payloads, keep results.
-- KEYS[1] meta, KEYS[2] running, KEYS[3] items, KEYS[4] att, KEYS[5] errors,
-- KEYS[6] results, KEYS[7] resultsIdx, KEYS[8] seen, KEYS[9] dead, KEYS[10] calls, KEYS[11] started,
-- KEYS[12] wake, KEYS[13] workers (the last item of a closed batch wakes every idle worker)
-- ARGV[1] version, ARGV[2] epoch, then quads: member ("<token>:<id>"), result JSON ('' = none),
--   reply MAC ('' = unsigned), ms to keep a call's id and result once done (0 = not a call)
-- returns the members whose lease was lost (rejected: nothing recorded for them)
-- Replies: when meta field `notify` is set ('s' = SPUBLISH, 'p' = PUBLISH; see
-- BatchQueue.enableReplies), each completed item whose id is "call:<client>:<n>" is announced
-- on the channel "<prefix>:{ns/name}:reply:<client>" as one line "r<TAB>id<TAB>MAC<TAB>result
-- JSON" (result '' = none; MAC: queue/call-replies.ts); one message per client and script call,
-- lines joined by "\n". A call with a keep time is indexed in `calls` (see tb_expire_calls).
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, running, items, att, errors, results, resultsIdx = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local now, callsAt = nil, nil
local done, gone, doneResults, doneMacs, kept = {}, {}, {}, {}, 0
for i = 3, #ARGV, 4 do
  local member = ARGV[i]
  if redis.call('ZREM', running, member) == 1 then
    local id = tb_member_id(member)
    done[#done + 1] = id
    local result = ARGV[i + 1]
    doneResults[#done] = result
    doneMacs[#done] = ARGV[i + 2]
    local keep = tonumber(ARGV[i + 3])
    if keep > 0 then
      callsAt = callsAt or tb_now_ms()
      redis.call('ZADD', KEYS[10], callsAt + keep, id)
      kept = kept + 1
    end
    if result ~= '' then
      now = now or tb_now_ms()
      redis.call('HSET', results, id, result)
      redis.call('ZADD', resultsIdx, now, id)
    end
  else
    gone[#gone + 1] = member
  end
end
local k = #done
tb_changed(meta, k)
if k > 0 then
  tb_call_chunked('HDEL', items, done, 1000)
  tb_call_chunked('HDEL', att, done, 1000)
  tb_call_chunked('HDEL', errors, done, 1000)
  tb_call_chunked('HDEL', KEYS[11], done, 1000)
  redis.call('HINCRBY', meta, 'running', -k)
  redis.call('HINCRBY', meta, 'succeeded', k)
  tb_wake_if_done(meta, KEYS[12], KEYS[13])
end
if now then
  -- Results live for resultTtlMs; trim a bounded number of expired ones per call.
  local ttl = tonumber(redis.call('HGET', meta, 'resultTtlMs'))
  local old = redis.call('ZRANGEBYSCORE', resultsIdx, '-inf', now - ttl, 'LIMIT', 0, 2 * k + 10)
  if #old > 0 then
    tb_call_chunked('HDEL', results, old, 1000)
    tb_call_chunked('ZREM', resultsIdx, old, 1000)
  end
  -- Once no result has been written for a whole TTL, every stored result has expired: let
  -- Redis drop both keys even if no later complete() trims them.
  redis.call('PEXPIRE', results, ttl)
  redis.call('PEXPIRE', resultsIdx, ttl)
end
if k > 0 then
  local notify = redis.call('HGET', meta, 'notify')
  if notify then
    local base = string.sub(meta, 1, #meta - 4)
    local lines, channels = {}, {}
    for j = 1, k do
      local id = done[j]
      if string.sub(id, 1, 5) == 'call:' then
        local colon = string.find(id, ':', 6, true)
        if colon then
          local channel = base .. 'reply:' .. string.sub(id, 6, colon - 1)
          if not lines[channel] then
            lines[channel] = {}
            channels[#channels + 1] = channel
          end
          local l = lines[channel]
          l[#l + 1] = 'r\t' .. id .. '\t' .. doneMacs[j] .. '\t' .. doneResults[j]
        end
      end
    end
    local publish = notify == 's' and 'SPUBLISH' or 'PUBLISH'
    for j = 1, #channels do
      redis.call(publish, channels[j], table.concat(lines[channels[j]], '\n'))
    end
  end
end
if kept > 0 then tb_expire_calls(KEYS[10], KEYS[8], items, KEYS[9], att, results, resultsIdx, callsAt, 2 * kept + 10) end
return gone
