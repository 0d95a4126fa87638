import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';

export interface RedisServer {
  host: string;
  port: number;
  url: string;
  dir: string;
  /** Stops the server (SIGTERM, then SIGKILL) and removes its directory. */
  stop(): Promise<void>;
  /** Kills the server and starts an empty one on the same port (a restart without persistence). */
  restart(): Promise<void>;
  /** SIGKILL only; the port stays reserved for restart(). */
  kill(): Promise<void>;
  start(): Promise<void>;
}

export interface RedisServerOptions {
  host?: string;
  port?: number;
  /** Extra redis-server arguments, e.g. ['--cluster-enabled', 'yes']. */
  args?: string[];
  /** Reported in url; e.g. 'rediss' for a TLS port. */
  scheme?: string;
}

/** Starts a real redis-server on a free loopback port, without persistence. */
export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? (await freePort(host));
  const dir = mkdtempSync(join(tmpdir(), 'tb-redis-'));
  let proc: ChildProcess | undefined;

  const start = async (): Promise<void> => {
    const portArgs = options.scheme === 'rediss' ? ['--port', '0', '--tls-port', String(port)] : ['--port', String(port)];
    const child = spawn('redis-server', [...portArgs, '--bind', host, '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no', ...(options.args ?? [])], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc = child;
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`redis-server on ${host}:${port} did not start in 10s:\n${out}`)), 10_000);
      const onData = (b: Buffer): void => {
        out += b.toString();
        if (out.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${out}`));
      });
    });
    // Keep draining output so the pipe never blocks the server.
    child.stdout?.resume();
    child.stderr?.resume();
    child.removeAllListeners('exit');
  };

  const kill = async (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
      p.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      p.kill(signal);
    });
  };

  await start();
  return {
    host,
    port,
    dir,
    url: `${options.scheme ?? 'redis'}://${host}:${port}`,
    start,
    kill: () => kill('SIGKILL'),
    restart: async () => {
      await kill('SIGKILL');
      await start();
    },
    stop: async () => {
      await kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
