// An I/O-bound handler for async mode: many requests in flight on one event loop.
// It passes ctx.signal to fetch, so a timeout or a lost lease really stops the request.
// Local run:  node dist/worker/main.js --local --pool-mode async --pool-size 32 \
//               --handler dist/examples/handlers/fetch-status.js --items urls.jsonl
import type { HandlerContext } from '../../worker/handler/api.js';
import { NonRetryableError } from '../../worker/handler/api.js';

export default async function fetchStatus(item: { url?: unknown }, ctx: HandlerContext): Promise<{ url: string; status: number; bytes: number }> {
  if (typeof item?.url !== 'string' || !/^https?:\/\//.test(item.url)) throw new NonRetryableError(`expected {"url": "http(s)://..."}, got ${JSON.stringify(item)}`);
  const res = await fetch(item.url, { signal: ctx.signal, redirect: 'follow' });
  const body = await res.arrayBuffer();
  // 4xx will not change on retry; 5xx and network errors (thrown by fetch) are retried.
  if (res.status >= 400 && res.status < 500) throw new NonRetryableError(`${item.url} answered ${res.status}`);
  if (res.status >= 500) throw new Error(`${item.url} answered ${res.status}`);
  return { url: item.url, status: res.status, bytes: body.byteLength };
}
