-- presence-beat: register or refresh one worker in the batch's registry and report
-- whether it was asked to drain.
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] drain
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] worker id, ARGV[4] presence JSON object with at
--   least one field and without "at" (the script prepends the server time as "at")
-- returns {drain requested for this worker (1|0), server time ms}
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local now = tb_now_ms()
redis.call('HSET', KEYS[2], ARGV[3], '{"at":' .. now .. ',' .. string.sub(ARGV[4], 2))
return {redis.call('SISMEMBER', KEYS[3], ARGV[3]), now}
