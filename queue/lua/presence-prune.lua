-- presence-prune: remove registry entries of workers that stopped heartbeating, and drain
-- requests for workers that are no longer registered.
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] drain
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] stale ms (entries whose heartbeat is older go)
-- returns {entries removed, drain requests removed}
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local workers, drain = KEYS[2], KEYS[3]
local cutoff = tb_now_ms() - tonumber(ARGV[3])
local all = redis.call('HGETALL', workers)
local stale = {}
for i = 1, #all, 2 do
  -- Entries are written by presence-beat as {"at":<ms>,...}; anything else is dropped.
  local at = tonumber(string.match(all[i + 1], '^{"at":(%d+)'))
  if not at or at < cutoff then stale[#stale + 1] = all[i] end
end
if #stale > 0 then redis.call('HDEL', workers, unpack(stale)) end
local asked = redis.call('SMEMBERS', drain)
local dropped = 0
for i = 1, #asked do
  if redis.call('HEXISTS', workers, asked[i]) == 0 then
    redis.call('SREM', drain, asked[i])
    dropped = dropped + 1
  end
end
return {#stale, dropped}
