-- presence-drain: ask one worker to drain (stop claiming, finish or release its items, exit).
-- The request stays until the worker leaves or its entry goes stale.
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] drain, KEYS[4] the worker's own wake list (wake-worker.lua)
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] worker id
-- returns 1 when the worker is registered, 0 when it is not (the request is kept anyway, so
--   a worker that registers later drains at once, unless a presence-prune runs first and
--   drops it: the operator asks again until the worker's entry shows the request)
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
redis.call('SADD', KEYS[3], ARGV[3])
-- An idle worker blocked on its wake lists starts draining now, not at its next heartbeat.
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[4], '1')
redis.call('PEXPIRE', KEYS[4], 60000)
return 1
