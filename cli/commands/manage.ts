import { RemoteCallError } from '../../sdk/index.js';
import type { Command, IO } from '../command.js';
import { bool, clientFromFlags, EXIT, outputFormat, parseDurationMs, printJson, printYaml, requireName, str, UsageError, type Parsed } from '../common.js';

const CLOSE_USAGE = 'taskbatch close NAME';

export const close: Command = {
  name: 'close',
  summary: 'Close an open batch: no more items; it completes once drained',
  usage: CLOSE_USAGE,
  connection: true,
  flags: {},
  help: `Closes an open batch: it takes no more items, and completes (the TaskBatch gets its Complete
or Failed condition) once every queued item has run. Idempotent.

Example:
  taskbatch close thumbnails && taskbatch watch thumbnails`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, CLOSE_USAGE);
    if (p.positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}\nusage: ${CLOSE_USAGE}`);
    const client = await clientFromFlags(p, io.env);
    try {
      const b = client.batch(name);
      await b.close();
      io.stdout.write(`Closed batch ${b.namespace}/${name}\n`);
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

const REPLAY_USAGE = 'taskbatch replay NAME (ID... | --all)';

export const replay: Command = {
  name: 'replay',
  summary: 'Run dead-lettered items again (some ids, or --all)',
  usage: REPLAY_USAGE,
  connection: true,
  flags: { all: { type: 'boolean' }, output: { type: 'string', short: 'o' } },
  help: `Moves dead-lettered items back to the queue with a fresh attempt count, once the cause of
their failure is fixed. Ids that are not dead-lettered are ignored. A closed batch that was
complete runs again until they are done (its workers come back).

      --all               Replay every dead-lettered item
  -o, --output FORMAT     text (default), json or yaml: {replayed}

Examples:
  taskbatch replay thumbnails --all
  taskbatch failures thumbnails | jq -r .id | head -10 | xargs taskbatch replay thumbnails`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, REPLAY_USAGE);
    const format = outputFormat(p, ['text', 'json', 'yaml'] as const);
    const ids = p.positionals.slice(1);
    if (bool(p, 'all') === ids.length > 0) throw new UsageError(`give the ids to replay, or --all (not both)\nusage: ${REPLAY_USAGE}`);
    const client = await clientFromFlags(p, io.env);
    try {
      const b = client.batch(name);
      const n = await b.replay(bool(p, 'all') ? undefined : ids);
      if (format === 'json') printJson(io.stdout, { batch: `${b.namespace}/${name}`, replayed: n });
      else if (format === 'yaml') printYaml(io.stdout, { batch: `${b.namespace}/${name}`, replayed: n });
      else io.stdout.write(`Replayed ${n} item${n === 1 ? '' : 's'} of ${b.namespace}/${name}${ids.length > n ? ` (${ids.length - n} of the given ids were not dead-lettered)` : ''}\n`);
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

const CANCEL_USAGE = 'taskbatch cancel NAME [--wait]';

export const cancel: Command = {
  name: 'cancel',
  summary: 'Stop a batch for good and delete its items and results',
  usage: CANCEL_USAGE,
  connection: true,
  flags: { wait: { type: 'boolean' }, timeout: { type: 'string' } },
  help: `Stops the batch for good. In Kubernetes mode it deletes the TaskBatch: its worker pods stop
(running items are released, not failed), and the operator's finalizer deletes the batch's
Redis keys. With only --redis-url it deletes the batch's Redis keys at once; workers still
running find the state gone and stop. Items, results and dead letters are deleted: save
what you need first (taskbatch results / failures).

      --wait               Wait until the TaskBatch is gone (its Redis keys deleted)
      --timeout DURATION   How long --wait waits (default 60s; exit code 6 after it)

Example:
  taskbatch results thumbnails > saved.jsonl && taskbatch cancel thumbnails --wait`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, CANCEL_USAGE);
    if (p.positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[1])}\nusage: ${CANCEL_USAGE}`);
    const timeoutMs = str(p, 'timeout') !== undefined ? parseDurationMs(str(p, 'timeout')!, '--timeout') : undefined;
    const client = await clientFromFlags(p, io.env);
    try {
      const b = client.batch(name);
      const r = await b.cancel({ wait: bool(p, 'wait'), ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
      io.stdout.write(
        r.deleted === 'TaskBatch'
          ? `Deleted TaskBatch ${b.namespace}/${name}${bool(p, 'wait') ? ' (and its Redis keys)' : '; the operator deletes its Redis keys'}\n`
          : `Deleted the Redis keys of batch ${b.namespace}/${name}\n`,
      );
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};

const CALL_USAGE = 'taskbatch call NAME FUNCTION [ARG...] [--timeout DURATION]';

export const call: Command = {
  name: 'call',
  summary: 'Call a function of a service batch and print its result',
  usage: CALL_USAGE,
  connection: true,
  flags: { timeout: { type: 'string' }, output: { type: 'string', short: 'o' } },
  help: `Calls FUNCTION of an open batch whose handler dispatches by name (handler {module: …,
dispatch: fn}) and prints the return value as JSON. Each ARG is parsed as JSON when it is
valid JSON, else taken as a string.

      --timeout DURATION   Give up after this long (default 30s; exit code 6)
  -o, --output FORMAT      json (default) or yaml

Exit code 5 when the function threw (its name and message on stderr).

Examples:
  taskbatch call math-service square 12
  taskbatch call math-service stats '[1, 2, 3]'`,
  async run(p: Parsed, io: IO): Promise<number> {
    const [name, fn, ...rawArgs] = p.positionals;
    if (!name || !fn) throw new UsageError(`missing the batch NAME or FUNCTION\nusage: ${CALL_USAGE}`);
    const format = outputFormat(p, ['json', 'yaml'] as const);
    const timeoutMs = str(p, 'timeout') !== undefined ? parseDurationMs(str(p, 'timeout')!, '--timeout') : 30_000;
    const args = rawArgs.map((a) => {
      try {
        return JSON.parse(a) as unknown;
      } catch {
        return a;
      }
    });
    const client = await clientFromFlags(p, io.env);
    try {
      let value: unknown;
      try {
        value = await client.call(name, fn, args, { timeoutMs, signal: io.signal });
      } catch (err) {
        if (err instanceof RemoteCallError) {
          io.stderr.write(`taskbatch: ${fn}() threw ${err.name}: ${err.message}\n`);
          return EXIT.failed;
        }
        throw err;
      }
      if (format === 'yaml') printYaml(io.stdout, value ?? null);
      else io.stdout.write(`${JSON.stringify(value ?? null)}\n`);
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
