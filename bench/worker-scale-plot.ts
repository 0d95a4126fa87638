// Draws the PNG of bench/worker-scale.ts with matplotlib (bench/plot_worker_scale.py), in a venv
// of its own under ~/.cache, created and filled on first use (PyPI), reused after that.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { log } from './queue-lib.js';

const VENV = join(homedir(), '.cache', 'taskbatch', 'bench-venv-plot');

function venvPython(): string {
  const python = join(VENV, 'bin', 'python');
  if (!existsSync(python)) {
    log(`creating ${VENV}`);
    execFileSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' });
  }
  try {
    execFileSync(python, ['-c', 'import matplotlib'], { stdio: 'ignore' });
  } catch {
    log(`installing matplotlib into ${VENV}`);
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', 'matplotlib'], { stdio: 'inherit' });
  }
  return python;
}

/** Writes `pngPath` from the results JSON at `resultsPath`. `script` is bench/plot_worker_scale.py. */
export function plotWorkerScale(script: string, resultsPath: string, pngPath: string): void {
  execFileSync(venvPython(), [script, resultsPath, pngPath], { stdio: 'inherit' });
}
