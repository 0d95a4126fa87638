-- wake-worker: wake one worker blocked on its own wake list (BLPOP <wake> <wake>:<worker id>),
-- so it notices a shutdown at once; the claim pipelined behind its BLPOP then runs, and the
-- worker hands back whatever it got. No epoch check: a worker must be able to stop whatever
-- state the batch is in. The token expires, so a worker that never reads it leaves nothing.
-- KEYS[1] meta, KEYS[2] the worker's wake list
-- ARGV[1] version, ARGV[2] epoch (unused)
-- returns 1
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], 60000)
return 1
