-- counts: the batch's counters (O(1)) and how many delayed items are already due, after
-- checking that the keys the counters describe are still there (a partial loss: keys evicted
-- or deleted one by one, which the meta hash alone does not show).
-- KEYS[1] meta, KEYS[2] delayed, KEYS[3] pending, KEYS[4] running, KEYS[5] items, KEYS[6] dead
-- ARGV[1] version, ARGV[2] epoch
-- returns {epoch, closed, total, pending, delayed, running, succeeded, failed, retries,
--          due delayed, seedCursor ('' none), handedBack (nil before the first release),
--          changes (state changes so far; see tb_changed)}
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'closed', 'total', 'pending', 'delayed', 'running',
  'succeeded', 'failed', 'retries', 'seedCursor', 'handedBack', 'changes')
local partial = tb_check_sizes(KEYS[1], KEYS[3], KEYS[2], KEYS[4], KEYS[5], KEYS[6],
  tonumber(m[4] or 0), tonumber(m[5] or 0), tonumber(m[6] or 0))
if partial then return redis.error_reply(partial) end
local due = redis.call('ZCOUNT', KEYS[2], '-inf', tb_now_ms())
return {m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], due, m[10] or '', m[11] or '0', m[12] or '0'}
