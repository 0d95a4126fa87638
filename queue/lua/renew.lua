-- renew: extend leases still held with the given tokens.
-- KEYS[1] meta, KEYS[2] running
-- ARGV[1] version, ARGV[2] epoch, ARGV[3] leaseMs, ARGV[4..] members ("<token>:<id>")
-- returns the members whose lease was lost (expired and reclaimed, or finished elsewhere)
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local running = KEYS[2]
local expiry = tb_now_ms() + tonumber(ARGV[3])
local gone = {}
for i = 4, #ARGV do
  if redis.call('ZSCORE', running, ARGV[i]) then
    redis.call('ZADD', running, 'XX', expiry, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
