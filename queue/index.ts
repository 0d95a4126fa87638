export * from './errors.js';
export * from './keys.js';
export * from './options.js';
export * from './queue.js';
export * from './connection.js';
export * from './presence.js';
export type { RedisClient } from './scripts.js';
export type { ItemError } from './serialize.js';
export * from './acl.js';
