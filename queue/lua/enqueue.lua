-- enqueue: add items; an item with a caller-given id is added at most once, ever.
-- KEYS[1] meta, KEYS[2] pending, KEYS[3] delayed, KEYS[4] items, KEYS[5] seen, KEYS[6] wake
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] seed cursor to record ('' = none),
-- ARGV[4] n, then n triples: id ('' = generate), payload JSON, delayMs (0 = due now)
-- returns {added, duplicates, first generated seq (ids are '#'..seq in order), -1 if none}
-- error TBCLOSED if the batch was closed and an item is new (all duplicates: a no-op).
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, pending, delayed, items, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = tonumber(ARGV[4])
if redis.call('HGET', meta, 'closed') == '1' then
  -- Re-sending items that are all already in the batch stays a no-op (idempotent retries).
  for i = 0, n - 1 do
    local id = ARGV[5 + i * 3]
    if id == '' or redis.call('SISMEMBER', seen, id) == 0 then
      return redis.error_reply('TBCLOSED batch is closed: no more items can be added')
    end
  end
  return {0, n, -1}
end
local generated = 0
for i = 0, n - 1 do
  if ARGV[5 + i * 3] == '' then generated = generated + 1 end
end
local seq = 0
if generated > 0 then seq = redis.call('HINCRBY', meta, 'seq', generated) - generated end
local firstSeq = seq + 1
local now = nil
local hset, push = {}, {}
local added, dups, nDelayed = 0, 0, 0
for i = 0, n - 1 do
  local id, payload, delay = ARGV[5 + i * 3], ARGV[6 + i * 3], tonumber(ARGV[7 + i * 3])
  local fresh = true
  if id == '' then
    seq = seq + 1
    id = '#' .. seq
  else
    fresh = redis.call('SADD', seen, id) == 1
  end
  if fresh then
    added = added + 1
    hset[#hset + 1] = id
    hset[#hset + 1] = payload
    if delay > 0 then
      now = now or tb_now_ms()
      redis.call('ZADD', delayed, now + delay, id)
      nDelayed = nDelayed + 1
    else
      push[#push + 1] = id
    end
  else
    dups = dups + 1
  end
end
tb_call_chunked('HSET', items, hset, 1000)
tb_call_chunked('RPUSH', pending, push, 1000)
redis.call('HINCRBY', meta, 'total', added)
tb_changed(meta, added)
if #push > 0 then
  redis.call('HINCRBY', meta, 'pending', #push)
  tb_wake(pending, KEYS[6])
end
if nDelayed > 0 then
  redis.call('HINCRBY', meta, 'delayed', nDelayed)
  tb_nudge(KEYS[6])
end
if ARGV[3] ~= '' then redis.call('HSET', meta, 'seedCursor', ARGV[3]) end
if generated == 0 then firstSeq = -1 end
return {added, dups, firstSeq}
