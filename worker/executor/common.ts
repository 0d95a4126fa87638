import type { InvokeResult } from '../handler/invoke.js';
import type { Outcome } from './types.js';

/** A FIFO with O(1) push/shift and rare O(n) removal. */
export class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(v: T): void {
    this.items.push(v);
  }

  unshiftMany(vs: readonly T[]): void {
    if (vs.length === 0) return;
    this.items = [...vs, ...this.items.slice(this.head)];
    this.head = 0;
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }

  remove(v: T): boolean {
    const i = this.items.indexOf(v, this.head);
    if (i < 0) return false;
    this.items.splice(i, 1);
    return true;
  }

  drain(): T[] {
    const out = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return out;
  }
}

export function outcomeOf(result: InvokeResult): Outcome {
  return result.ok ? { status: 'succeeded', json: result.json, durationMs: result.ms } : { status: 'failed', error: result.error, retryable: result.retryable, durationMs: result.ms };
}

export function timeoutError(timeoutMs: number, what: string): { name: string; message: string } {
  return { name: 'TimeoutError', message: `item timed out after ${formatMs(timeoutMs)}; ${what}` };
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${+(ms / 1000).toFixed(3)}s` : `${Math.round(ms)}ms`;
}

/** A DOMException-like error for signal reasons, cloneable across threads. */
export function reasonError(name: string, message: string): Error {
  const e = new Error(message);
  e.name = name;
  return e;
}
