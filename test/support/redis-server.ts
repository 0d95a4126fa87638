// The real redis-server helper lives with the rest of the local environment.
export { startRedisServer, type RedisServer, type RedisServerOptions } from '../../localcluster/redis-server.js';
