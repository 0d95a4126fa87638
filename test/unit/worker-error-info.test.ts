import { ERROR_MESSAGE_MAX, ERROR_NAME_MAX, ERROR_STACK_MAX, retryableOf, toErrorInfo } from '../../worker/handler/error-info.js';
import { invoke, ItemContext, type InvokeResult } from '../../worker/handler/invoke.js';

// Whatever a handler throws becomes a bounded {name, message} record; never an exception out
// of the conversion or out of invoke() (async mode leaked a slot and hot-looped the item).

/** mulberry32, as in queue-property.test.ts: a failing seed can be replayed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Gen = (rand: () => number, depth: number) => unknown;

function text(rand: () => number): string {
  const long = rand() < 0.15;
  const n = long ? 16_000 + Math.floor(rand() * 4_000) : Math.floor(rand() * 40);
  const units = ['a', 'Z', ' ', '\n', '\u00e9', '\ud83d\ude00', '\ud800', '\u0000', '"', '\\'];
  let s = '';
  for (let i = 0; i < n; i++) s += units[Math.floor(rand() * units.length)];
  return s;
}

function circular(rand: () => number): Record<string, unknown> {
  const o: Record<string, unknown> = { message: rand() < 0.5 ? text(rand) : undefined };
  o.self = o;
  o.nested = { back: o };
  return o;
}

function throwingProxy(thrown: unknown): object {
  const trap = () => {
    throw thrown;
  };
  return new Proxy(
    {},
    { get: trap, has: trap, getPrototypeOf: trap, ownKeys: trap, getOwnPropertyDescriptor: trap, set: trap, defineProperty: trap, deleteProperty: trap, apply: trap, construct: trap },
  );
}

function withThrowingGetters(rand: () => number, depth: number, base: object): object {
  const keys = ['message', 'name', 'stack', 'retryable', 'toString', 'toJSON', 'cause'].filter(() => rand() < 0.6);
  for (const k of keys) {
    const thrown = nasty(rand, depth + 1);
    Object.defineProperty(base, k, {
      get() {
        throw thrown;
      },
      configurable: true,
    });
  }
  return base;
}

const gens: Gen[] = [
  () => null,
  () => undefined,
  (rand) => [Number.NaN, Number.POSITIVE_INFINITY, -0, 42, rand() * 1e300][Math.floor(rand() * 5)],
  (rand) => text(rand),
  (rand) => (rand() < 0.5 ? Symbol(text(rand)) : Symbol()),
  (rand) => BigInt(Math.floor(rand() * 1e15)) ** 20n,
  (rand) => rand() < 0.5,
  () => () => 'a function',
  (rand) => Object.assign(Object.create(null) as object, rand() < 0.5 ? { message: Object.create(null) as object } : { x: 1 }),
  (rand, d) => ({ message: Object.create(null) as object, name: rand() < 0.5 ? Object.create(null) : nasty(rand, d + 1) }),
  (rand) => ({ message: [Symbol('s'), 10n, Object.create(null), { toString: 7 }][Math.floor(rand() * 4)] }),
  (rand, d) => ({
    message: {
      toString() {
        throw nasty(rand, d + 1);
      },
    },
  }),
  (rand, d) => {
    const thrown = nasty(rand, d + 1);
    return {
      toString() {
        throw thrown;
      },
      toJSON() {
        throw thrown;
      },
    };
  },
  (rand) => circular(rand),
  (rand, d) => throwingProxy(nasty(rand, d + 1)),
  () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    return proxy;
  },
  (rand, d) => withThrowingGetters(rand, d, new Error(text(rand))),
  (rand, d) => withThrowingGetters(rand, d, {}),
  (rand) => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    a.cause = b;
    if (rand() < 0.5) (a as unknown as { self: unknown }).self = a;
    return rand() < 0.5 ? a : new AggregateError([a, b], 'many');
  },
  (rand) => Object.assign(new Error(text(rand)), { name: text(rand) + text(rand) }),
  (rand) => Object.assign(new TypeError('typed'), { name: [7, null, {}, Symbol('n'), ''][Math.floor(rand() * 5)] }),
  (rand) => ({ message: text(rand), stack: 10n, name: 'Plain' }),
  (rand) => new Error('with a big cause', { cause: BigInt(Math.floor(rand() * 1000)) }),
];

function nasty(rand: () => number, depth = 0): unknown {
  // Past depth 3 only the leaf generators (the first eight), so recursion ends.
  const pool = depth > 3 ? gens.slice(0, 8) : gens;
  return (pool[Math.floor(rand() * pool.length)] as Gen)(rand, depth);
}

function expectBounded(info: unknown): void {
  expect(info).toEqual(expect.objectContaining({ name: expect.any(String), message: expect.any(String) }));
  const { name, message, stack } = info as { name: string; message: string; stack?: unknown };
  expect(name.length).toBeGreaterThan(0);
  expect(name.length).toBeLessThanOrEqual(ERROR_NAME_MAX);
  expect(message.length).toBeLessThanOrEqual(ERROR_MESSAGE_MAX);
  if (stack !== undefined) {
    expect(typeof stack).toBe('string');
    expect((stack as string).length).toBeLessThanOrEqual(ERROR_STACK_MAX);
  }
  expect(Object.keys(info as object).every((k) => ['name', 'message', 'stack'].includes(k))).toBe(true);
  // It crosses threads and processes, and is stored as JSON.
  expect(structuredClone(info)).toEqual(info);
  expect(JSON.parse(JSON.stringify(info))).toEqual(info);
}

const SEEDS = Array.from({ length: 20 }, (_, i) => i + 1);

test.each(SEEDS)('any thrown value becomes a bounded {name, message} (seed %i)', (seed) => {
  const rand = rng(seed);
  for (let i = 0; i < 40; i++) {
    const thrown = nasty(rand);
    let info: unknown;
    expect(() => {
      info = toErrorInfo(thrown);
    }).not.toThrow();
    expectBounded(info);
    expect(typeof retryableOf(thrown)).toBe('boolean');
  }
});

test.each(SEEDS)('ordinary errors keep their name and message (seed %i)', (seed) => {
  const rand = rng(seed * 7919);
  for (let i = 0; i < 20; i++) {
    const message = text(rand).slice(0, ERROR_MESSAGE_MAX);
    const name = (text(rand) || 'E').slice(0, ERROR_NAME_MAX);
    const kinds = [Error, TypeError, RangeError, SyntaxError];
    const err = new (kinds[Math.floor(rand() * kinds.length)] as ErrorConstructor)(message);
    if (rand() < 0.5) err.name = name;
    const info = toErrorInfo(err);
    expect(info).toMatchObject({ name: err.name, message });
    expect(info.stack).toEqual(expect.any(String));
    expectBounded(info);
    expect(retryableOf(err)).toBe(true);
    expect(retryableOf(Object.assign(err, { retryable: false }))).toBe(false);
  }
});

test('over-long fields are cut without splitting a surrogate pair', () => {
  const info = toErrorInfo(Object.assign(new Error('\ud83d\ude00'.repeat(ERROR_MESSAGE_MAX)), { name: 'N'.repeat(ERROR_NAME_MAX * 4) }));
  expect(info.name.length).toBeLessThanOrEqual(ERROR_NAME_MAX);
  expect(info.message.length).toBeLessThanOrEqual(ERROR_MESSAGE_MAX);
  expect(info.message.endsWith('… [truncated]')).toBe(true);
  expect(info.message).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])/);
});

test('names what was thrown when it is not an error', () => {
  expect(toErrorInfo(null)).toEqual({ name: 'Error', message: 'non-error value thrown: null' });
  expect(toErrorInfo(undefined)).toEqual({ name: 'Error', message: 'non-error value thrown: undefined' });
  expect(toErrorInfo(Symbol('why'))).toEqual({ name: 'Error', message: 'non-error value thrown: Symbol(why)' });
  expect(toErrorInfo(12n)).toEqual({ name: 'Error', message: 'non-error value thrown: 12n' });
  expect(toErrorInfo('plain text')).toEqual({ name: 'Error', message: 'plain text' });
  expect(toErrorInfo({ code: 7 })).toEqual({ name: 'Error', message: 'non-error value thrown: {"code":7}' });
  expect(toErrorInfo({ message: Object.create(null) })).toEqual({ name: 'Error', message: '{}' });
});

const ctx = () => new ItemContext('i1', 1, { progress: () => undefined, log: () => undefined });
const task = { id: 'i1', attempt: 1, payload: '{}' };

test.each(SEEDS)('invoke() never throws nor rejects, whatever a handler throws, rejects with or returns (seed %i)', async (seed) => {
  const rand = rng(seed * 104_729);
  for (let i = 0; i < 15; i++) {
    const thrown = nasty(rand);
    const shapes: (() => unknown)[] = [
      () => {
        throw thrown;
      },
      () => Promise.reject(thrown),
      async () => {
        await null;
        throw thrown;
      },
      // A returned value that is inspected for `then`.
      () => thrown,
    ];
    for (const handler of shapes) {
      let r: InvokeResult | Promise<InvokeResult> | undefined;
      expect(() => {
        r = invoke(handler, task, ctx());
      }).not.toThrow();
      const result = await (r as InvokeResult | Promise<InvokeResult>);
      expect(typeof result.ok).toBe('boolean');
      if (!result.ok) expectBounded(result.error);
    }
  }
});
