// The smallest handler: an ESM module whose default export gets (item, ctx).
// Local run:  node dist/worker/main.js --local --handler dist/examples/handlers/hello.js --items examples/items/hello.jsonl
// In a TaskBatch: spec.handler: {module: /app/dist/examples/handlers/hello.js}
import type { HandlerContext } from '../../worker/handler/api.js';
import { NonRetryableError } from '../../worker/handler/api.js';

interface Greeting {
  name?: unknown;
}

export default function hello(item: Greeting, ctx: HandlerContext): { greeting: string; attempt: number } {
  if (typeof item?.name !== 'string' || item.name === '') {
    // Bad input will not get better by retrying: dead-letter it at once.
    throw new NonRetryableError(`expected {"name": "..."}, got ${JSON.stringify(item)}`);
  }
  ctx.log.info('Greeted someone', { name: item.name });
  return { greeting: `Hello, ${item.name}!`, attempt: ctx.attempt };
}
