import { createReadStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { SubmitItem } from '../../sdk/index.js';
import type { Command, IO } from '../command.js';
import { bool, clientFromFlags, EXIT, outputFormat, parseDurationMs, printJson, printYaml, requireName, str, UsageError, type Parsed } from '../common.js';

const USAGE = 'taskbatch submit NAME [-f FILE | -] [--data JSON] [flags]';

export const submit: Command = {
  name: 'submit',
  summary: 'Add items to an open batch (JSON Lines from a file or stdin)',
  usage: USAGE,
  connection: true,
  flags: {
    file: { type: 'string', short: 'f' },
    data: { type: 'string', multiple: true },
    'id-field': { type: 'string' },
    'id-prefix': { type: 'string' },
    envelope: { type: 'boolean' },
    delay: { type: 'string' },
    'not-before': { type: 'string' },
    close: { type: 'boolean' },
    output: { type: 'string', short: 'o' },
  },
  help: `Adds items to an open batch (a TaskBatch with spec.open: true, or a batch made by
\`taskbatch run\` of such a manifest). Each line of the input is one item's data, as JSON; blank
lines are skipped. Items are sent in chunks of 5000, each chunk validated before it is written.

  -f, --file FILE        JSON Lines file; "-" reads standard input (the default when stdin is a pipe)
      --data JSON        One item given inline (repeatable), instead of a file
      --id-field FIELD   Each item's id is this field of its data: re-submitting adds nothing twice
      --id-prefix P      Ids P-1, P-2, … by line number: re-running the same file adds nothing twice
      --envelope         Each line is {"data": …, "id"?: …, "delayMs"?: …, "notBefore"?: …}
      --delay DURATION   Run no earlier than this long from now (500ms, 30s, 5m, 1h, 2d) — Celery's countdown
      --not-before TIME  Run no earlier than this time (RFC 3339, e.g. 2030-01-01T09:00:00Z) — Celery's eta
      --close            Close the batch afterwards: it completes once what is queued has run
  -o, --output FORMAT    text (default), json or yaml: {added, duplicates}

Without ids, every submission adds new items: give --id-field or --id-prefix when a submission
may be retried. Delayed items wait in Redis, not in a worker, so no delay is too long.

Examples:
  taskbatch submit thumbnails -f images.jsonl --id-field url
  generate-items | taskbatch submit thumbnails - --delay 10m
  taskbatch submit thumbnails --data '{"url": "https://example.com/a.png"}' --close`,
  async run(p: Parsed, io: IO): Promise<number> {
    const name = requireName(p, USAGE);
    if (p.positionals.length > 2 || (p.positionals[1] !== undefined && p.positionals[1] !== '-')) throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals.at(-1))}\nusage: ${USAGE}`);
    const format = outputFormat(p, ['text', 'json', 'yaml'] as const);
    const file = str(p, 'file') ?? (p.positionals[1] === '-' ? '-' : undefined);
    const inline = (p.values.data as string[] | undefined) ?? [];
    if (file && inline.length) throw new UsageError('give either --file/- or --data, not both');
    if (str(p, 'id-field') && str(p, 'id-prefix')) throw new UsageError('give either --id-field or --id-prefix, not both');
    if (str(p, 'delay') && str(p, 'not-before')) throw new UsageError('give either --delay or --not-before, not both');
    const delayMs = str(p, 'delay') !== undefined ? parseDurationMs(str(p, 'delay')!, '--delay') : undefined;
    let notBefore: Date | undefined;
    if (str(p, 'not-before') !== undefined) {
      notBefore = new Date(str(p, 'not-before')!);
      if (Number.isNaN(notBefore.getTime())) throw new UsageError(`--not-before ${JSON.stringify(str(p, 'not-before'))} is not a time; use RFC 3339, e.g. 2030-01-01T09:00:00Z`);
    }
    // Opened only when iterated: a readline interface must be iterated from the start, or lines
    // (and its end) emitted meanwhile are lost.
    let source: () => AsyncIterable<string> | string[];
    let where: string;
    if (inline.length) {
      source = () => inline;
      where = '--data';
    } else if (file === '-' || (!file && io.stdin.isTTY !== true)) {
      source = () => createInterface({ input: io.stdin, crlfDelay: Infinity });
      where = 'stdin';
    } else if (file) {
      if (!existsSync(file)) throw Object.assign(new Error(`file ${file} does not exist`), { exitCode: EXIT.notFound });
      source = () => createInterface({ input: createReadStream(file), crlfDelay: Infinity });
      where = file;
    } else {
      throw new UsageError(`nothing to submit: give -f FILE, "-" (stdin) or --data JSON\nusage: ${USAGE}`);
    }
    const idField = str(p, 'id-field');
    const idPrefix = str(p, 'id-prefix');
    const envelope = bool(p, 'envelope');
    let submitted = 0;
    async function* items(): AsyncGenerator<SubmitItem> {
      let line = 0;
      for await (const text of source()) {
        line++;
        if (text.trim() === '') continue;
        let value: unknown;
        try {
          value = JSON.parse(text);
        } catch (err) {
          throw new UsageError(`${where}:${line}: not valid JSON (${(err as Error).message})${submitted ? `; the items before it were submitted` : ''}`);
        }
        let item: SubmitItem;
        if (envelope) {
          if (!value || typeof value !== 'object' || !('data' in value))
            throw new UsageError(`${where}:${line}: with --envelope each line must be an object {"data": …, "id"?, "delayMs"?, "notBefore"?}`);
          const e = value as { data: unknown; id?: unknown; delayMs?: unknown; notBefore?: unknown };
          item = { data: e.data };
          if (e.id !== undefined) item.id = String(e.id);
          if (e.delayMs !== undefined) item.delayMs = Number(e.delayMs);
          if (e.notBefore !== undefined) item.notBefore = typeof e.notBefore === 'number' ? e.notBefore : new Date(String(e.notBefore));
        } else {
          item = { data: value };
        }
        if (idField) {
          const id = value && typeof value === 'object' ? (value as Record<string, unknown>)[idField] : undefined;
          if (id === undefined || id === null || typeof id === 'object')
            throw new UsageError(`${where}:${line}: --id-field ${idField}: the item has no string or number field ${JSON.stringify(idField)}`);
          item.id = String(id);
        } else if (idPrefix) {
          item.id = `${idPrefix}-${line}`;
        }
        if (delayMs !== undefined && item.delayMs === undefined) item.delayMs = delayMs;
        if (notBefore && item.notBefore === undefined) item.notBefore = notBefore;
        submitted++;
        yield item;
      }
    }
    const client = await clientFromFlags(p, io.env);
    try {
      const b = client.batch(name);
      const r = await b.submitMany(items());
      if (bool(p, 'close')) await b.close();
      const summary = { batch: `${b.namespace}/${b.name}`, added: r.added, duplicates: r.duplicates, closed: bool(p, 'close') };
      if (format === 'json') printJson(io.stdout, summary);
      else if (format === 'yaml') printYaml(io.stdout, summary);
      else
        io.stdout.write(
          `Submitted ${r.added} item${r.added === 1 ? '' : 's'} to ${summary.batch}${r.duplicates ? ` (${r.duplicates} already there, skipped)` : ''}${summary.closed ? '; closed the batch' : ''}\n`,
        );
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
