// The SDK in a few lines: call the math service's functions, and feed a batch.
//
//   npm run build
//   taskbatch run examples/math-service.yaml          # terminal 1: serves math-service locally; prints its --redis-url
//   node dist/examples/sdk-quickstart.js redis://127.0.0.1:PORT   # terminal 2
//
// Against a cluster (kubectl apply -f examples/math-service.yaml), run it without an argument: the
// SDK then finds the TaskBatch through your kubeconfig (and port-forwards to its Redis if needed).
// In your own project, import from 'taskbatch/sdk'.
import { connect, RemoteCallError } from '../sdk/index.js';
import type * as MathModule from './handlers/math.js';

const redisUrl = process.argv[2];
const client = await connect(redisUrl ? { redis: redisUrl } : {});
try {
  // Remote calls: typed from the handler module itself.
  const math = client.proxy<typeof MathModule>('math-service', { timeoutMs: 10_000 });
  console.log('square(12) =', await math.square(12));
  console.log('stats =', await math.stats([3, 1, 4, 1, 5, 9, 2, 6]));
  try {
    await math.divide(1, 0);
  } catch (err) {
    if (err instanceof RemoteCallError) console.log(`divide(1, 0) threw ${err.name}: ${err.message}`);
    else throw err;
  }
  // Many calls at once are batched on the way in and on the way back.
  const t0 = performance.now();
  const squares = await Promise.all(Array.from({ length: 1000 }, (_, i) => math.square(i)));
  console.log(`1000 calls in ${(performance.now() - t0).toFixed(0)} ms; sum of squares ${squares.reduce((a, b) => a + b, 0)}`);

  // The same service batch also takes plain items ({fn, args}); their results are kept.
  const batch = client.batch('math-service');
  const { ids } = await batch.submitMany([{ id: 'later', data: { fn: 'add', args: [40, 2] }, delayMs: 1000 }]);
  console.log('submitted', ids, (await batch.status()).counts);
} finally {
  await client.close();
}
