-- start: mark prefetched items as started, just before their handlers run, so a worker that
-- dies during one of them is charged an attempt for it (tb_reclaim charges started items only).
-- KEYS[1] meta, KEYS[2] running, KEYS[3] started
-- ARGV[1] version, ARGV[2] epoch, ARGV[3..] members ("<token>:<id>")
-- returns the members whose lease was lost (their handlers must not run)
local lost = tb_check(KEYS[1])
if lost then return redis.error_reply(lost) end
local gone, marks = {}, {}
for i = 3, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    marks[#marks + 1] = tb_member_id(ARGV[i])
    marks[#marks + 1] = ARGV[i]
  else
    gone[#gone + 1] = ARGV[i]
  end
end
tb_call_chunked('HSET', KEYS[3], marks, 1000)
return gone
