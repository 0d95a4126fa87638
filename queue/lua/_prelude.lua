-- Shared helpers, prepended to every taskbatch script at load time (see queue/scripts.ts).
-- Every script's KEYS[1] is the batch's meta hash; ARGV[1] is the caller's protocol
-- version and ARGV[2] the epoch it expects ('' = any epoch, but the batch must exist).

-- redis.call(cmd, key, args...) in slices of `step` values (keep whole entries together: an even
-- step for field/value or score/member pairs): Lua's unpack fails past about 8,000 values, and an
-- error after a script's first write would leave that write in place. Returns the replies'
-- elements concatenated (HMGET's false for a missing field included).
local function tb_call_chunked(cmd, key, args, step)
  local out = {}
  for i = 1, #args, step do
    local r = redis.call(cmd, key, unpack(args, i, math.min(i + step - 1, #args)))
    if type(r) == 'table' then
      for j = 1, #r do out[#out + 1] = r[j] end
    end
  end
  return out
end

local function tb_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Returns an error string when the batch's state is missing, of another protocol
-- version, or of another epoch (its data was lost and recreated); nil when all is well.
local function tb_check(meta)
  local m = redis.call('HMGET', meta, 'v', 'epoch')
  if not m[1] then
    return 'TBLOST batch state not found in Redis (expected epoch ' .. (ARGV[2] ~= '' and ARGV[2] or 'any') .. ')'
  end
  if m[1] ~= ARGV[1] then
    return 'TBVERSION batch uses queue protocol version ' .. m[1] .. ' but this client speaks version ' .. ARGV[1]
  end
  if ARGV[2] ~= '' and m[2] ~= ARGV[2] then
    return 'TBLOST batch epoch is ' .. tostring(m[2]) .. ' but ' .. ARGV[2] .. ' was expected: its state was lost and recreated'
  end
  return nil
end

-- Returns an error string when a key the counters describe holds fewer entries than they say
-- (keys evicted or deleted one by one: the meta hash survived, so tb_check passes); nil when
-- they agree. Every script changes a list and its counter together, so any difference is loss.
local function tb_check_sizes(meta, pending, delayed, running, items, dead, nPending, nDelayed, nRunning)
  local have = {
    {'pending', redis.call('LLEN', pending), nPending},
    {'delayed', redis.call('ZCARD', delayed), nDelayed},
    {'running', redis.call('ZCARD', running), nRunning},
  }
  local wrong = {}
  for i = 1, #have do
    if have[i][2] ~= have[i][3] then
      wrong[#wrong + 1] = 'the ' .. have[i][1] .. ' key holds ' .. have[i][2] .. ' but the counters say ' .. have[i][3]
    end
  end
  -- Payloads are kept for every unfinished item and every dead letter (for replay).
  local unfinished = nPending + nDelayed + nRunning
  local deadLetters = redis.call('HLEN', dead)
  local payloads = redis.call('HLEN', items)
  if payloads < unfinished + deadLetters then
    wrong[#wrong + 1] = 'the items key holds ' .. payloads .. ' payloads for ' .. unfinished .. ' unfinished items and ' .. deadLetters .. ' dead letters'
  end
  if #wrong == 0 then return nil end
  return 'TBPARTIAL batch keys lost (' .. table.concat(wrong, '; ') .. '): evicted or deleted'
end

-- Counts state changes in meta field `changes`, a number that only grows: Redis restored from an
-- older snapshot keeps the batch's epoch but not this count, so the operator, which keeps the
-- last count it saw in the TaskBatch's status, can tell that Redis went back in time.
local function tb_changed(meta, n)
  if n > 0 then redis.call('HINCRBY', meta, 'changes', n) end
end

-- A running-set member is "<token>:<id>"; tokens are decimal so the first ':' splits.
local function tb_member_id(member)
  local i = string.find(member, ':', 1, true)
  return string.sub(member, i + 1)
end

local function tb_dead_record(attempts, now, errjson)
  return '{"attempts":' .. attempts .. ',"failedAt":' .. now .. ',"error":' .. errjson .. '}'
end

-- A remote call dead-lettered because its worker died is kept for the failureTtlMs its caller put
-- in the payload ({"reply":{"key":..,"idTtlMs":..,"failureTtlMs":..},..}, queue/call-replies.ts),
-- as fail.lua keeps one that failed in its handler: indexed in `calls` for tb_expire_calls.
local function tb_index_dead_call(calls, items, id, now)
  if string.sub(id, 1, 5) ~= 'call:' then return end
  local payload = redis.call('HGET', items, id)
  local ttl = payload and tonumber(string.match(payload, '^{"reply":{"key":"%x+","idTtlMs":%d+,"failureTtlMs":(%d+)}'))
  if ttl and ttl >= 1 and ttl <= 7776000000 then redis.call('ZADD', calls, now + ttl, id) end
end

-- Moves up to `limit` items whose lease expired before `now` back to pending or, once
-- maxAttempts is reached, to the dead-letter hash. Only an item whose handler started under
-- that lease (`started` holds the member) is charged an attempt: one a dead worker had
-- prefetched but never started goes back to the front of pending uncharged (counted in
-- handedBack), so a poison item that kills its worker cannot dead-letter its neighbours.
-- Returns the number of items reclaimed.
local function tb_reclaim(meta, running, pending, att, dead, errors, started, items, calls, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', running, '-inf', now, 'LIMIT', 0, limit)
  local n = #expired
  if n == 0 then return 0 end
  local maxAttempts = tonumber(redis.call('HGET', meta, 'maxAttempts'))
  local requeued, deadCount, unstarted = 0, 0, {}
  for i = 1, n do
    local id = tb_member_id(expired[i])
    if redis.call('HGET', started, id) ~= expired[i] then
      unstarted[#unstarted + 1] = id
    else
      redis.call('HDEL', started, id)
      local attempts = redis.call('HINCRBY', att, id, 1)
      if attempts >= maxAttempts then
        local err = '{"name":"LeaseExpired","message":"lease expired on attempt ' .. attempts .. ' of ' .. maxAttempts .. ' (worker died or stalled)"}'
        redis.call('HSET', dead, id, tb_dead_record(attempts, now, err))
        redis.call('HDEL', errors, id)
        deadCount = deadCount + 1
        tb_index_dead_call(calls, items, id, now)
      else
        redis.call('RPUSH', pending, id)
        redis.call('HSET', errors, id, '{"name":"LeaseExpired","message":"lease expired on attempt ' .. attempts .. '"}')
        requeued = requeued + 1
      end
    end
  end
  tb_call_chunked('ZREM', running, expired, 1000)
  redis.call('HINCRBY', meta, 'running', -n)
  if requeued > 0 then
    redis.call('HINCRBY', meta, 'pending', requeued)
    redis.call('HINCRBY', meta, 'retries', requeued)
  end
  if #unstarted > 0 then
    -- LPUSH in reverse keeps their order at the front, as release does.
    for i = #unstarted, 1, -1 do redis.call('LPUSH', pending, unstarted[i]) end
    redis.call('HINCRBY', meta, 'pending', #unstarted)
    redis.call('HINCRBY', meta, 'handedBack', #unstarted)
  end
  if deadCount > 0 then redis.call('HINCRBY', meta, 'failed', deadCount) end
  return n
end

-- Moves up to `limit` delayed items that are due by `now` to pending.
local function tb_promote(meta, delayed, pending, now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  local n = #due
  if n == 0 then return 0 end
  tb_call_chunked('RPUSH', pending, due, 1000)
  tb_call_chunked('ZREM', delayed, due, 1000)
  redis.call('HINCRBY', meta, 'delayed', -n)
  redis.call('HINCRBY', meta, 'pending', n)
  return n
end

-- Remote calls (queue/call-replies.ts) index what a finished call leaves behind in the zset
-- `calls` (id -> ms from which it may go). Drops up to `limit` entries due by `now`: for a call
-- still dead-lettered, its dead letter, payload and attempt count; for one that completed, its
-- stored result; for both, its id in the idempotence set. A call replayed and live again keeps
-- everything (its next outcome indexes it anew).
local function tb_expire_calls(calls, seen, items, dead, att, results, resultsIdx, now, limit)
  local due = redis.call('ZRANGEBYSCORE', calls, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return end
  for i = 1, #due do
    local id = due[i]
    if redis.call('HDEL', dead, id) == 1 then
      redis.call('HDEL', items, id)
      redis.call('HDEL', att, id)
      redis.call('SREM', seen, id)
    elseif redis.call('HEXISTS', items, id) == 0 then
      redis.call('HDEL', results, id)
      redis.call('ZREM', resultsIdx, id)
      redis.call('SREM', seen, id)
    end
  end
  tb_call_chunked('ZREM', calls, due, 1000)
end

-- Wake-ups. An idle worker blocks on the list `wake` (BLPOP, with a claim pipelined behind it)
-- instead of polling. Whoever makes items claimable tops the list up to one token per pending
-- item, at most TB_WAKE_CAP: one new call wakes one worker, not all of them, and the list stays
-- small while every worker is busy. claim empties it once nothing is pending. A token may be
-- stale (another worker took the item first); it costs one empty claim, never an item.
local TB_WAKE_CAP = 32

local function tb_push_tokens(wake, n)
  while n > 0 do
    local k = math.min(n, 1000)
    local t = {}
    for i = 1, k do t[i] = '1' end
    redis.call('RPUSH', wake, unpack(t))
    n = n - k
  end
end

-- After items were added to `pending`.
local function tb_wake(pending, wake)
  local n = redis.call('LLEN', pending)
  if n > 0 then tb_push_tokens(wake, math.min(n, TB_WAKE_CAP) - redis.call('LLEN', wake)) end
end

-- After a delayed item was added: one worker wakes, learns its due time from the claim's reply,
-- and arms a timer for it (the worker then runs reclaim.lua, which promotes it and wakes others).
local function tb_nudge(wake)
  if redis.call('LLEN', wake) == 0 then redis.call('RPUSH', wake, '1') end
end

-- Once a closed batch has nothing left, every idle worker must look (and exit): one token per
-- registered worker, plus one. Returns whether the batch is done.
local function tb_wake_if_done(meta, wake, workers)
  local m = redis.call('HMGET', meta, 'closed', 'pending', 'delayed', 'running')
  if m[1] ~= '1' or tonumber(m[2] or 0) + tonumber(m[3] or 0) + tonumber(m[4] or 0) > 0 then return false end
  tb_push_tokens(wake, redis.call('HLEN', workers) + 1 - redis.call('LLEN', wake))
  return true
end

-- Ms until the earliest lease in `running` expires (-1: none): an idle worker wakes then to
-- reclaim it, as nothing else would.
local function tb_next_expiry(running, now)
  local first = redis.call('ZRANGE', running, 0, 0, 'WITHSCORES')
  if not first[2] then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end

local function tb_next_due(delayed, now)
  local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if not first[2] then return -1 end
  return math.max(0, tonumber(first[2]) - now)
end
