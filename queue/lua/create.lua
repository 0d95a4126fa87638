-- create: make a batch's state if it does not exist; return its epoch either way.
-- KEYS[1] meta
-- ARGV[1] protocol version, ARGV[2] new epoch (used only when the batch is created),
-- ARGV[3] maxAttempts, ARGV[4] backoff initialMs, ARGV[5] backoff factor,
-- ARGV[6] backoff maxMs, ARGV[7] backoff jitter (0..1), ARGV[8] result TTL ms
-- returns {epoch, created (1|0)}; error TBVERSION if it exists with another version.
local meta = KEYS[1]
local existing = redis.call('HMGET', meta, 'v', 'epoch')
if existing[1] then
  if existing[1] ~= ARGV[1] then
    return redis.error_reply('TBVERSION batch uses queue protocol version ' .. existing[1] .. ' but this client speaks version ' .. ARGV[1])
  end
  return {existing[2], 0}
end
redis.call('HSET', meta,
  'v', ARGV[1], 'epoch', ARGV[2], 'createdAt', tb_now_ms(), 'closed', 0,
  'maxAttempts', ARGV[3], 'backoffInitialMs', ARGV[4], 'backoffFactor', ARGV[5],
  'backoffMaxMs', ARGV[6], 'backoffJitter', ARGV[7], 'resultTtlMs', ARGV[8],
  'total', 0, 'pending', 0, 'delayed', 0, 'running', 0, 'succeeded', 0, 'failed', 0,
  'retries', 0, 'handedBack', 0, 'seq', 0, 'tok', 0)
return {ARGV[2], 1}
