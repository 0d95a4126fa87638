-- claim: reclaim expired leases, promote due delayed items, then lease up to n items whose
-- payloads fit in a byte budget.
-- KEYS[1] meta, KEYS[2] pending, KEYS[3] delayed, KEYS[4] running, KEYS[5] items,
-- KEYS[6] att, KEYS[7] dead, KEYS[8] errors, KEYS[9] started, KEYS[10] calls, KEYS[11] wake,
-- KEYS[12] workers
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] n (max items), ARGV[4] leaseMs,
-- ARGV[5] max expired leases to reclaim in this call,
-- ARGV[6] maxBytes: budget of the reply's items (payload bytes + member bytes each). Items are
--   taken from the head of pending while the running total stays <= maxBytes; the item that
--   would cross the budget is NOT taken, except as the first item (a single item larger than
--   the budget is still claimed, alone). Ids not taken never leave pending: they stay at its
--   front in their order, and the counters move only for the items taken.
-- ARGV[7] how many of the leased items start at once (marked started; the rest are
--   prefetched: see start.lua and tb_reclaim)
-- returns {closed (1|0), ms until the next delayed item is due (-1 none),
--          ids left at the head of pending because of the budget (0 when the budget did not bind),
--          ms until the earliest lease expires (-1 none),
--          then per item: member ("<token>:<id>"), prior failed attempts, payload}
-- Wake-ups (see tb_wake): tokens are topped up while items stay pending; once none is, the list
-- is emptied, unless the batch is done (closed, nothing left), when every idle worker must look.
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, pending, delayed, running, items, att = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local n, leaseMs, maxBytes = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local now = tb_now_ms()
tb_changed(meta, tb_reclaim(meta, running, pending, att, KEYS[7], KEYS[8], KEYS[9], items, KEYS[10], now, tonumber(ARGV[5])))
tb_changed(meta, tb_promote(meta, delayed, pending, now, math.max(n, 100)))

local closed = redis.call('HGET', meta, 'closed') == '1' and 1 or 0
local nextDue = tb_next_due(delayed, now)

local function wake_after_claim()
  if redis.call('LLEN', pending) > 0 then
    tb_wake(pending, KEYS[11])
  elseif not tb_wake_if_done(meta, KEYS[11], KEYS[12]) then
    redis.call('LTRIM', KEYS[11], 1, 0)
  end
end

-- Sizes first (HSTRLEN copies nothing), so the script never holds payloads it will not return.
local candidates = redis.call('LRANGE', pending, 0, n - 1)
-- Lease tokens never repeat, even after Redis is restored from an older snapshot (which brings
-- the counter back): they never fall below the server's clock in ms times 1000 (room for 1000
-- tokens a ms), so a holder from before the rollback cannot commit with a token handed out again.
-- Formatted with %d: tostring would print such numbers in exponent notation.
local tok = math.max(tonumber(redis.call('HGET', meta, 'tok') or '0'), now * 1000)
local k, bytes = 0, 0
for i = 1, #candidates do
  local size = redis.call('HSTRLEN', items, candidates[i])
  -- A pending id without its payload (payloads are JSON, never empty): keys were lost one by
  -- one. Refuse before leasing anything rather than hand a handler a made-up payload (the
  -- reclaiming and promoting above are consistent on their own).
  if size == 0 then
    return redis.error_reply('TBPARTIAL batch keys lost (item ' .. candidates[i] .. ' is pending but its payload is gone): evicted or deleted')
  end
  size = size + #string.format('%d', tok + i) + 1 + #candidates[i]
  if k > 0 and bytes + size > maxBytes then break end
  k = k + 1
  bytes = bytes + size
end
local out = {closed, nextDue, #candidates - k, -1}
if k == 0 then
  wake_after_claim()
  out[4] = tb_next_expiry(running, now)
  return out
end

local ids = redis.call('LPOP', pending, k)
redis.call('HSET', meta, 'tok', string.format('%d', tok + k))
local payloads = tb_call_chunked('HMGET', items, ids, 1000)
local attempts = tb_call_chunked('HMGET', att, ids, 1000)
local zadd = {}
local startNow = math.min(k, tonumber(ARGV[7]))
local marks = {}
local expiry = now + leaseMs
for i = 1, k do
  local member = string.format('%d', tok + i) .. ':' .. ids[i]
  -- ZADD in descending member order: while the running set is small (<= 128, a listpack)
  -- each insert scans from the head for its place, and these members share a score and ascend.
  zadd[2 * (k - i) + 1] = expiry
  zadd[2 * (k - i) + 2] = member
  out[#out + 1] = member
  out[#out + 1] = attempts[i] or '0'
  out[#out + 1] = payloads[i]
  if i <= startNow then
    marks[#marks + 1] = ids[i]
    marks[#marks + 1] = member
  end
end
tb_call_chunked('ZADD', running, zadd, 1000)
tb_call_chunked('HSET', KEYS[9], marks, 1000)
redis.call('HINCRBY', meta, 'pending', -k)
redis.call('HINCRBY', meta, 'running', k)
tb_changed(meta, k)
wake_after_claim()
out[4] = tb_next_expiry(running, now)
return out
