-- reclaim: the sweeper's transition: requeue (or dead-letter) items whose lease expired,
-- and promote due delayed items, without claiming anything.
-- KEYS[1] meta, KEYS[2] pending, KEYS[3] delayed, KEYS[4] running, KEYS[5] att,
-- KEYS[6] dead, KEYS[7] errors, KEYS[8] started, KEYS[9] items, KEYS[10] calls
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] max items to reclaim, ARGV[4] max to promote
-- returns {reclaimed, promoted}
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local now = tb_now_ms()
local reclaimed = tb_reclaim(KEYS[1], KEYS[4], KEYS[2], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], now, tonumber(ARGV[3]))
local promoted = tb_promote(KEYS[1], KEYS[3], KEYS[2], now, tonumber(ARGV[4]))
tb_changed(KEYS[1], reclaimed + promoted)
return {reclaimed, promoted}
