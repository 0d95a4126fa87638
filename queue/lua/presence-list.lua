-- presence-list: every registry entry with its drain flag, and the server time (callers
-- judge staleness against it, not against their own clock).
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] drain
-- ARGV[1] version, ARGV[2] epoch
-- returns {server time ms, then per worker: id, presence JSON, drain requested (1|0)}
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local out = {tb_now_ms()}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  out[#out + 1] = all[i]
  out[#out + 1] = all[i + 1]
  out[#out + 1] = redis.call('SISMEMBER', KEYS[3], all[i])
end
return out
