import { execFileSync, spawnSync } from 'node:child_process';
import { connect as tlsConnect } from 'node:tls';
import { Redis } from 'ioredis';
import { BatchQueue, batchKeys, connectRedis, InvalidArgumentError, type RedisClient } from '../../queue/index.js';
import { startRedisServer } from '../../localcluster/redis-server.js';
import { startRedisCluster } from '../support/redis-cluster.js';
import { makeServerCerts } from '../support/tls-certs.js';
import { uniqueBatch } from '../support/batches.js';

/** Why a TLS handshake without our private CA fails (node's own TLS client). */
function untrustedHandshakeError(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port, servername: 'localhost' }, () => {
      socket.destroy();
      resolve('connected');
    });
    socket.once('error', (err) => {
      socket.destroy();
      resolve(err.message);
    });
  });
}

/** Runs every transition of a batch's lifecycle through a client. */
async function exerciseProtocol(client: RedisClient): Promise<void> {
  const q = new BatchQueue(client, uniqueBatch('dep'));
  await q.create({ maxAttempts: 1 });
  await q.enqueueMany(Array.from({ length: 1200 }, (_, i) => ({ id: `x${i}`, data: i, ...(i % 100 === 0 ? { delayMs: 1 } : {}) })));
  await q.close();
  await new Promise((r) => setTimeout(r, 5));
  let done = 0;
  let failed = 0;
  for (;;) {
    const { items } = await q.claim(250, 10_000);
    if (items.length === 0) break;
    const [bad, good] = [items.slice(0, 1), items.slice(1)];
    await q.renew(items, 10_000);
    await q.fail(bad.map((claim) => ({ claim, error: { name: 'E', message: 'x' } })));
    failed += bad.length;
    done += (await q.complete(good.map((claim) => ({ claim, result: claim.id })))).completed;
  }
  await q.reclaimExpired();
  const deadId = (await q.deadLetters()).items[0]!.id;
  expect(await q.replay([deadId])).toBe(1);
  const again = await q.claim(1, 10_000);
  await q.release(again.items);
  const s = await q.snapshot();
  expect(s).toMatchObject({ total: 1200, succeeded: done, failed: failed - 1, pending: 1 });
  expect((await q.results(0, 5)).length).toBe(5);
  expect(await q.purge()).toBeGreaterThan(0);
}

test('the protocol runs on a 3-primary Redis Cluster with no CROSSSLOT errors', async () => {
  const cluster = await startRedisCluster(3);
  const client = connectRedis({ url: cluster.seedUrl, cluster: true });
  try {
    // Batches land on different slots/nodes; every script touches only its own hash tag.
    for (let i = 0; i < 3; i++) await exerciseProtocol(client);
    const stats = cluster.nodes.map((n) => execFileSync('redis-cli', ['-p', String(n.port), 'INFO', 'errorstats']).toString());
    expect(stats.join('\n')).not.toMatch(/CROSSSLOT/);
    // Every key of a batch hashes to one slot (its hash tag), whatever node owns it.
    const keys = Object.values(batchKeys({ namespace: 'test', name: 'slot-check' }));
    const slots = new Set(
      keys.map((k) =>
        execFileSync('redis-cli', ['-p', String(cluster.nodes[0]!.port), 'CLUSTER', 'KEYSLOT', k])
          .toString()
          .trim(),
      ),
    );
    expect(slots.size).toBe(1);
  } finally {
    client.disconnect();
    await cluster.stop();
  }
});

test('TLS (rediss://) with a private CA', async () => {
  const certs = makeServerCerts();
  const server = await startRedisServer({
    scheme: 'rediss',
    args: ['--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey, '--tls-ca-cert-file', certs.caCert, '--tls-auth-clients', 'no'],
  });
  const client = connectRedis({ url: server.url, tls: { caFile: certs.caCert } });
  try {
    await exerciseProtocol(client);
    // Without the CA the server's certificate is not trusted.
    expect(await untrustedHandshakeError(server.host, server.port)).toMatch(/self[- ]signed|unable to (verify|get local issuer)|certificate/i);
  } finally {
    client.disconnect();
    await server.stop();
  }
});

test('ACL user with a password; the URL may not carry the password', async () => {
  const server = await startRedisServer();
  const admin = new Redis(server.port, server.host);
  await admin.call('ACL', 'SETUSER', 'tbuser', 'on', '>s3cret', '~tb:*', '+@all', '-@dangerous', '+info');
  await admin.call('ACL', 'SETUSER', 'default', 'off');
  admin.disconnect();
  expect(() => connectRedis({ url: `redis://tbuser:s3cret@${server.host}:${server.port}` })).toThrow(InvalidArgumentError);
  expect(() => connectRedis({ url: `redis://tbuser:s3cret@${server.host}:${server.port}` })).toThrow(/must not contain a password/);
  const client = connectRedis({ url: server.url, username: 'tbuser', password: 's3cret' });
  try {
    await exerciseProtocol(client);
    const wrong = spawnSync('redis-cli', ['-h', server.host, '-p', String(server.port), '--user', 'tbuser', '--pass', 'nope', '--no-auth-warning', 'PING']);
    expect(wrong.stdout.toString() + wrong.stderr.toString()).toMatch(/WRONGPASS/);
  } finally {
    client.disconnect();
    await server.stop();
  }
});
