-- purge: delete every key of the batch (cancel / cleanup). Idempotent; no epoch check,
-- so a batch whose state was partly lost can still be cleaned up.
-- KEYS: every key of the batch
-- ARGV: none
-- returns the number of keys that existed
return redis.call('UNLINK', unpack(KEYS))
