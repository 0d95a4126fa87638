// The cost of per-namespace Redis ACL users (docs/security.md): claim/complete drain throughput
// as the default (admin, no key patterns) user vs as a namespace user (tb-ns-bench: key and
// channel patterns, a command list), same redis-server, same process, rounds alternating
// which goes first. Each drain: N items enqueued beforehand (untimed), then the serial loop of
// bench/queue-drain.ts: claim(100) -> JSON.parse each -> complete(batch) -> repeat. Each client
// enqueues its own batch (as the same user) before the timer starts.
//
//   node dist/bench/queue-acl.js [--n 100000] [--rounds 5]
import { Redis } from 'ioredis';
import { BatchQueue, namespaceAclUser, passwordHash, setNamespaceAclUser, type ItemInput } from '../queue/index.js';
import { fmtInt, fmtRatio, intOption, log, machineLine, measure, median, printTable, startBenchRedis } from './queue-lib.js';

const argv = process.argv.slice(2);
const N = intOption(argv, 'n', 'BENCH_N', 100_000);
const ROUNDS = intOption(argv, 'rounds', 'BENCH_ROUNDS', 5);
const NS = 'bench';
const PASSWORD = 'bench-namespace-password';

let seq = 0;
/** A batch of N items, enqueued by `client` (not timed). */
async function prepare(client: Redis): Promise<BatchQueue> {
  const q = new BatchQueue(client, { namespace: NS, name: `acl-${++seq}` });
  await q.create();
  const items: ItemInput[] = Array.from({ length: N }, (_, i) => ({ data: { i } }));
  for (let i = 0; i < items.length; i += 10_000) await q.enqueueMany(items.slice(i, i + 10_000));
  return q;
}

/** Items per second of the claim/complete loop. */
async function drain(q: BatchQueue): Promise<number> {
  const t0 = process.hrtime.bigint();
  let done = 0;
  for (;;) {
    const { items: claimed } = await q.claim(100, 30_000);
    if (claimed.length === 0) break;
    for (const c of claimed) JSON.parse(c.payload);
    done += (await q.complete(claimed.map((claim) => ({ claim })))).completed;
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (done !== N) throw new Error(`drained ${done} of ${N}`);
  await q.purge();
  return N / seconds;
}

async function main(): Promise<void> {
  log(machineLine());
  const r = await startBenchRedis();
  await setNamespaceAclUser(r.admin, NS, [passwordHash(PASSWORD)]);
  const admin = new Redis({ host: r.server.host, port: r.server.port, maxRetriesPerRequest: null });
  const user = new Redis({ host: r.server.host, port: r.server.port, username: namespaceAclUser(NS), password: PASSWORD, maxRetriesPerRequest: null });
  const rates: Record<'admin' | 'namespace user', number[]> = { admin: [], 'namespace user': [] };
  const redisCpu: Record<'admin' | 'namespace user', number[]> = { admin: [], 'namespace user': [] };
  await drain(await prepare(admin)); // warm-up (scripts loaded, JIT)
  await drain(await prepare(user));
  for (let round = 0; round < ROUNDS; round++) {
    const order: ('admin' | 'namespace user')[] = round % 2 === 0 ? ['admin', 'namespace user'] : ['namespace user', 'admin'];
    for (const who of order) {
      const q = await prepare(who === 'admin' ? admin : user);
      const m = await measure(r.pid, () => drain(q));
      rates[who].push(m.value);
      redisCpu[who].push(m.redisCpuUs / N);
      log(`round ${round + 1}: ${who} ${fmtInt(m.value)} items/s`);
    }
  }
  const a = median(rates.admin);
  const u = median(rates['namespace user']);
  printTable(
    ['user', 'median items/s', 'redis CPU µs/item', 'vs admin'],
    [
      ['admin (default user)', fmtInt(a), median(redisCpu.admin).toFixed(2), '1.00x'],
      [`namespace user (${namespaceAclUser(NS)})`, fmtInt(u), median(redisCpu['namespace user']).toFixed(2), fmtRatio(u / a)],
    ],
  );
  log(`redis ${r.version}, N=${N}, ${ROUNDS} rounds; ${machineLine()}`);
  admin.disconnect();
  user.disconnect();
  await r.stop();
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
