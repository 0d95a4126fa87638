-- close: no more items will be added; the batch completes once it drains.
-- KEYS[1] meta, KEYS[2] wake, KEYS[3] workers (closing a drained batch wakes every idle worker)
-- ARGV[1] version, ARGV[2] epoch
-- returns 1
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
if redis.call('HGET', KEYS[1], 'closed') ~= '1' then tb_changed(KEYS[1], 1) end
redis.call('HSET', KEYS[1], 'closed', 1)
tb_wake_if_done(KEYS[1], KEYS[2], KEYS[3])
return 1
