-- reclaim: the sweeper's transition: requeue (or dead-letter) items whose lease expired,
-- and promote due delayed items, without claiming anything.
-- KEYS[1] meta, KEYS[2] pending, KEYS[3] delayed, KEYS[4] running, KEYS[5] att,
-- KEYS[6] dead, KEYS[7] errors, KEYS[8] started, KEYS[9] items, KEYS[10] calls, KEYS[11] wake,
-- KEYS[12] workers
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] max items to reclaim, ARGV[4] max to promote
-- returns {reclaimed, promoted, ms until the next delayed item is due (-1 none),
--          ms until the earliest lease expires (-1 none)}
-- Idle workers run it when a delayed item falls due or a lease expires (the times claim
-- returned): what it makes pending wakes as many workers (tb_wake).
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local now = tb_now_ms()
local reclaimed = tb_reclaim(KEYS[1], KEYS[4], KEYS[2], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], now, tonumber(ARGV[3]))
local promoted = tb_promote(KEYS[1], KEYS[3], KEYS[2], now, tonumber(ARGV[4]))
tb_changed(KEYS[1], reclaimed + promoted)
tb_wake(KEYS[2], KEYS[11])
if reclaimed > 0 then tb_wake_if_done(KEYS[1], KEYS[11], KEYS[12]) end
return {reclaimed, promoted, tb_next_due(KEYS[3], now), tb_next_expiry(KEYS[4], now)}
