-- wake-worker: wake one worker blocked on its own wake list (BLPOP <wake> <wake>:<worker id>),
-- so it notices a shutdown at once; the claim pipelined behind its BLPOP then runs, and the
-- worker hands back whatever it got. No epoch check: a worker must be able to stop whatever
-- state the batch is in. Only a registered worker is woken, so nothing is written for a batch
-- already purged (the worker's wait then ends at its safety net); the token expires, and the
-- worker's presence-leave deletes it, so a token never read leaves nothing behind.
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] the worker's wake list
-- ARGV[1] version, ARGV[2] epoch (unused), ARGV[3] worker id
-- returns 1 when the worker was woken, 0 when it is not registered
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 0 then return 0 end
redis.call('RPUSH', KEYS[3], '1')
redis.call('PEXPIRE', KEYS[3], 60000)
return 1
