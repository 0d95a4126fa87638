-- replay: move dead-lettered items back to pending with a fresh attempt count.
-- KEYS[1] meta, KEYS[2] dead, KEYS[3] att, KEYS[4] pending, KEYS[5] wake
-- ARGV[1] version, ARGV[2] epoch, ARGV[3..] item ids
-- returns the number of items replayed (ids not in the dead-letter set are ignored)
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local meta, dead, att, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local n = 0
for i = 3, #ARGV do
  if redis.call('HDEL', dead, ARGV[i]) == 1 then
    redis.call('HDEL', att, ARGV[i])
    redis.call('RPUSH', pending, ARGV[i])
    n = n + 1
  end
end
tb_changed(meta, n)
if n > 0 then
  redis.call('HINCRBY', meta, 'failed', -n)
  redis.call('HINCRBY', meta, 'pending', n)
  tb_wake(pending, KEYS[5])
end
return n
