-- release: give leased items back to the front of the queue without counting an attempt.
-- A stopping worker (SIGTERM, drain) hands back what it had not started, or could not finish
-- within its grace; meta counter `handedBack` counts them (not `retries`: they are not failures,
-- though an unfinished one runs again from the start).
-- KEYS[1] meta, KEYS[2] running, KEYS[3] pending, KEYS[4] started, KEYS[5] wake
-- ARGV[1] version, ARGV[2] epoch, ARGV[3..] members ("<token>:<id>")
-- returns the members that were no longer held (nothing done for them)
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, running, pending = KEYS[1], KEYS[2], KEYS[3]
local gone, released = {}, 0
for i = #ARGV, 3, -1 do
  if redis.call('ZREM', running, ARGV[i]) == 1 then
    local id = tb_member_id(ARGV[i])
    redis.call('LPUSH', pending, id)
    redis.call('HDEL', KEYS[4], id)
    released = released + 1
  else
    gone[#gone + 1] = ARGV[i]
  end
end
tb_changed(meta, released)
if released > 0 then
  redis.call('HINCRBY', meta, 'running', -released)
  redis.call('HINCRBY', meta, 'pending', released)
  redis.call('HINCRBY', meta, 'handedBack', released)
  tb_wake(pending, KEYS[5])
end
return gone
