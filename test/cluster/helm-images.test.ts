/**
 * The images the chart runs, without a Docker engine: the Dockerfiles' structure (multi-stage,
 * Node 24, non-root, production dependencies only, the entry points the chart and the local
 * node agent assume), their COPY sources (present, not excluded by .dockerignore), their build
 * stage (tsc over only the directories they copy), and their runtime layout (the files the
 * runtime stage copies, assembled in a temp /app, run for real: a worker runs a batch in process
 * mode against a real Redis; the operator and the chart's hooks load their whole module graph).
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { Redis } from 'ioredis';
import { defaultImageMap, repoRoot, runCommand } from '../../localcluster/index.js';
import { BatchQueue } from '../../queue/index.js';
import { startRedisServer, type RedisServer } from '../../localcluster/redis-server.js';

const ROOT = repoRoot();
const IMAGES = { operator: 'Dockerfile.operator', worker: 'Dockerfile.worker' } as const;
type Component = keyof typeof IMAGES;

interface Stage {
  from: string;
  name?: string;
  lines: string[];
}

function stages(dockerfile: string): { args: Record<string, string>; stages: Stage[] } {
  const text = readFileSync(join(ROOT, dockerfile), 'utf8').replace(/\\\n/g, ' ');
  const args: Record<string, string> = {};
  const out: Stage[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const arg = /^ARG (\w+)=(\S+)$/.exec(line);
    if (arg && out.length === 0) args[arg[1]!] = arg[2]!;
    const from = /^FROM (\S+)(?: AS (\S+))?$/i.exec(line);
    if (from) out.push({ from: from[1]!.replace(/\$\{(\w+)\}/g, (_m, n: string) => args[n] ?? ''), ...(from[2] ? { name: from[2] } : {}), lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return { args, stages: out };
}

/** COPY sources from the build context (not --from another stage). */
function contextCopies(stage: Stage): string[] {
  return stage.lines
    .filter((l) => l.startsWith('COPY ') && !l.includes('--from='))
    .flatMap((l) =>
      l
        .replace(/^COPY\s+/, '')
        .split(/\s+/)
        .filter((w) => !w.startsWith('--'))
        .slice(0, -1),
    );
}

function dockerignore(): string[] {
  return readFileSync(join(ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
}

function ignored(path: string, patterns: string[]): boolean {
  const clean = path.replace(/\/$/, '');
  return patterns.some((p) => {
    if (p.startsWith('**/')) return new RegExp(`${p.slice(3).replace(/\./g, '\\.').replace(/\*/g, '[^/]*')}$`).test(clean);
    const re = new RegExp(`^${p.replace(/\./g, '\\.').replace(/\*/g, '[^/]*')}(/|$)`);
    return re.test(clean);
  });
}

let dir: string;
let redis: RedisServer;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tb-images-'));
  redis = await startRedisServer();
}, 30_000);
afterAll(async () => {
  await redis?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe.each(Object.keys(IMAGES) as Component[])('the %s image', (component) => {
  const dockerfile = IMAGES[component];

  test('is multi-stage on Node 24, runs as a numeric non-root user, with production dependencies only', () => {
    const { stages: s } = stages(dockerfile);
    expect(s.length).toBeGreaterThanOrEqual(3);
    for (const st of s) expect(st.from).toMatch(/^node:24[.-]/);
    const runtime = s.at(-1)!;
    expect(runtime.name).toBeUndefined();
    expect(runtime.lines).toContain('USER 1000:1000');
    // The runtime stage installs no npm package itself: node_modules comes from a --omit=dev
    // stage. The worker's installs its init (tini, from Debian) and nothing else.
    const runs = runtime.lines.filter((l) => l.startsWith('RUN '));
    expect(runs.filter((l) => /\bnpm\b/.test(l))).toEqual([]);
    expect(runs.map((l) => /apt-get install -y --no-install-recommends (.+?);/.exec(l)?.[1] ?? l)).toEqual(component === 'worker' ? ['tini'] : []);
    const modules = runtime.lines.find((l) => /^COPY --from=(\S+) \S*node_modules\/? /.test(l));
    const depsStage = s.find((st) => st.name === /--from=(\S+)/.exec(modules ?? '')?.[1]);
    expect(depsStage?.lines.some((l) => /npm ci .*--omit=dev/.test(l))).toBe(true);
    // No compiler or sources in the runtime stage.
    expect(runtime.lines.some((l) => /COPY .*\b(tsconfig\.json|\.ts)\b/.test(l))).toBe(false);
  });

  test('its entry point is the one the chart and the local node agent assume', () => {
    const runtime = stages(dockerfile).stages.at(-1)!;
    const entry = runtime.lines.find((l) => l.startsWith('ENTRYPOINT '));
    const rule = defaultImageMap(ROOT).find((r) => typeof r.image === 'string' && r.image.includes(component));
    expect(JSON.parse(entry!.replace(/^ENTRYPOINT /, ''))).toEqual(rule?.entrypoint);
    expect(runtime.lines).toContain('WORKDIR /app');
  });

  test('its COPY sources exist and are not excluded by .dockerignore', () => {
    const patterns = dockerignore();
    const sources = stages(dockerfile).stages.flatMap(contextCopies);
    expect(sources.length).toBeGreaterThan(3);
    for (const src of sources) {
      expect([src, existsSync(join(ROOT, src))]).toEqual([src, true]);
      expect([src, ignored(src, patterns)]).toEqual([src, false]);
    }
    // And the context stays small: no local state, tests or the chart.
    for (const p of ['node_modules', 'dist', '.git', 'test', 'charts']) expect([p, ignored(p, patterns)]).toEqual([p, true]);
  });

  test('its build stage compiles with only the directories it copies', async () => {
    const build = join(dir, `build-${component}`);
    mkdirSync(build, { recursive: true });
    const copies = stages(dockerfile)
      .stages[0]!.lines.filter((l) => l.startsWith('COPY '))
      .flatMap((l) =>
        l
          .replace(/^COPY\s+/, '')
          .split(/\s+/)
          .slice(0, -1),
      );
    for (const src of copies) cpSync(join(ROOT, src), join(build, src), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'));
    const r = await runCommand(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: build, timeoutMs: 120_000, env: process.env });
    expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: '' });
    expect(existsSync(join(build, `dist/${component}/main.js`))).toBe(true);
  }, 150_000);

  test('its runtime layout runs', async () => {
    // Assemble /app as the runtime stage does, from the build stage's output.
    const app = join(dir, `app-${component}`);
    const build = join(dir, `build-${component}`);
    mkdirSync(app, { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
    for (const l of stages(dockerfile)
      .stages.at(-1)!
      .lines.filter((x) => x.startsWith('COPY ') && !x.includes('node_modules'))) {
      const words = l.replace(/^COPY\s+/, '').split(/\s+/);
      const from = words.find((w) => w.startsWith('--from='));
      const [src, dest] = words.filter((w) => !w.startsWith('--')) as [string, string];
      const source = join(from ? build : ROOT, src.replace(/^\/src\//, ''));
      // Docker's rules: a file copied to a path ending in / keeps its name; a directory's contents are copied.
      const target = dest.endsWith('/') && !statSync(source).isDirectory() ? join(app, dest, basename(source)) : join(app, dest);
      cpSync(source, target, { recursive: true });
    }
    expect(existsSync(join(app, 'queue/lua/claim.lua'))).toBe(true);
    if (component === 'worker') {
      // A real batch through the image's files: process mode (child entry point), Lua scripts.
      const items = join(dir, 'items.jsonl');
      writeFileSync(items, `${Array.from({ length: 50 }, (_, i) => JSON.stringify({ i })).join('\n')}\n`);
      const r = await runCommand(
        process.execPath,
        [
          join(app, 'dist/worker/main.js'),
          '--local',
          '--redis-url',
          redis.url,
          '--batch',
          'image-check',
          '--handler',
          'noop',
          '--pool-mode',
          'process',
          '--pool-size',
          '2',
          '--items',
          items,
          '--no-progress',
        ],
        { cwd: app, timeoutMs: 60_000, env: { PATH: process.env.PATH ?? '' } },
      );
      expect({ code: r.code, err: r.stderr.slice(-2000) }).toEqual({ code: 0, err: expect.any(String) });
      const client = new Redis(redis.port, redis.host);
      try {
        expect(await new BatchQueue(client, { namespace: 'default', name: 'image-check' }).snapshot()).toMatchObject({ total: 50, succeeded: 50, failed: 0 });
      } finally {
        client.disconnect();
      }
    } else {
      // Every static import of the operator and the hooks resolves inside /app: they get as far
      // as validating their configuration (exit 2 with a message naming the variable).
      const op = await runCommand(process.execPath, [join(app, 'dist/operator/main.js')], { cwd: app, timeoutMs: 30_000, env: { PATH: process.env.PATH ?? '', TASKBATCH_WORKER_COMMAND: 'not json' } });
      expect({ code: op.code, out: op.stdout + op.stderr }).toEqual({ code: 2, out: expect.stringContaining('TASKBATCH_WORKER_COMMAND') });
      for (const [hook, env] of [
        ['delete-taskbatches.mjs', 'TASKBATCH_HOOK_TIMEOUT_SECONDS'],
        ['smoke-test.mjs', 'TASKBATCH_TEST_ITEMS'],
      ] as const) {
        const h = await runCommand(process.execPath, [join(app, 'docker/hooks', hook)], { cwd: app, timeoutMs: 30_000, env: { PATH: process.env.PATH ?? '', [env]: 'many' } });
        expect({ hook, code: h.code, out: h.stdout + h.stderr }).toEqual({ hook, code: 2, out: expect.stringContaining(env) });
      }
    }
  }, 90_000);
});
