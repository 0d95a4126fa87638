/**
 * Pod IPs on the loopback network: every pod gets its own 127.0.X.Y (never 127.0.0.x, never
 * 127.0.1.x, which Debian uses for the host name). Linux routes all of 127.0.0.0/8 to `lo`, so a
 * process can bind any of them without set-up, and two pods can serve the same port side by side.
 *
 * A node agent leases whole /24 blocks (127.0.X.0/24, X in 10..254) through lock files under the
 * temp dir, so several agents (several test files, a demo) on one machine never hand out the same
 * address. A block whose owner process is gone is taken over.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const FIRST_BLOCK = 10;
const LAST_BLOCK = 254;

export class PodIpAllocator {
  private readonly lockDir: string;
  private readonly blocks: number[] = [];
  private readonly inUse = new Set<string>();
  private next = 0;

  constructor(lockDir = join(tmpdir(), 'taskbatch-localcluster-podnet')) {
    this.lockDir = lockDir;
    mkdirSync(lockDir, { recursive: true });
    this.leaseBlock();
  }

  /** The block prefixes this allocator holds, e.g. ["127.0.10"]. */
  get ranges(): string[] {
    return this.blocks.map((b) => `127.0.${b}.0/24`);
  }

  allocate(): string {
    for (;;) {
      const capacity = this.blocks.length * 254;
      // Hand addresses out round-robin, so a released address is not reused at once.
      for (let i = 0; i < capacity; i++) {
        const idx = (this.next + i) % capacity;
        const block = this.blocks[Math.floor(idx / 254)];
        const ip = `127.0.${block}.${(idx % 254) + 1}`;
        if (!this.inUse.has(ip)) {
          this.inUse.add(ip);
          this.next = idx + 1;
          return ip;
        }
      }
      this.leaseBlock();
    }
  }

  release(ip: string): void {
    this.inUse.delete(ip);
  }

  /** Gives the blocks back. */
  close(): void {
    for (const b of this.blocks.splice(0)) rmSync(this.lockFile(b), { force: true });
    this.inUse.clear();
  }

  private lockFile(block: number): string {
    return join(this.lockDir, `127.0.${block}.lock`);
  }

  private leaseBlock(): void {
    for (let b = FIRST_BLOCK; b <= LAST_BLOCK; b++) {
      if (this.blocks.includes(b)) continue;
      const file = this.lockFile(b);
      try {
        writeFileSync(file, String(process.pid), { flag: 'wx' });
        this.blocks.push(b);
        return;
      } catch {
        if (!ownerAlive(file)) {
          rmSync(file, { force: true });
          try {
            writeFileSync(file, String(process.pid), { flag: 'wx' });
            this.blocks.push(b);
            return;
          } catch {
            // someone else took it meanwhile
          }
        }
      }
    }
    throw new Error(`no free pod address block left in 127.0.${FIRST_BLOCK}-${LAST_BLOCK}.0/24 (lock files in ${this.lockDir})`);
  }
}

function ownerAlive(file: string): boolean {
  let pid: number;
  try {
    pid = Number(readFileSync(file, 'utf8').trim());
  } catch {
    return true; // being written; assume alive
  }
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
