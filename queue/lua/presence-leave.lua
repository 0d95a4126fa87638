-- presence-leave: remove one worker's entry and its drain request (a worker exiting).
-- No epoch check: leaving must work even when the batch's state is gone, and HDEL/SREM
-- never create keys.
-- KEYS[1] meta, KEYS[2] workers, KEYS[3] drain, KEYS[4] the worker's own wake list
-- ARGV[1] version, ARGV[2] epoch (unused), ARGV[3] worker id
-- returns 1 when an entry was removed, else 0
redis.call('SREM', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[4], 1, 0)
return redis.call('HDEL', KEYS[2], ARGV[3])
