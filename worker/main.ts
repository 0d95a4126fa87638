#!/usr/bin/env node
// The worker process: `taskbatch-worker` (or `node dist/worker/main.js`). Configuration
// comes from TASKBATCH_* environment variables, each overridable by a flag (see --help);
// `--local` runs one worker against a batch from the terminal (see local-run.ts).
import { ConfigError, helpText, loadConfig, parseFlags, SECRET_ENV } from './config.js';
import { EXIT_CODES } from './exit-codes.js';
import { createLogger } from './log.js';
import { runLocalCli } from './local-run.js';
import { runWorker } from './run.js';

async function main(argv: string[]): Promise<number> {
  if (argv[0] === '--local' || argv[0] === 'local') return runLocalCli(argv.slice(1));
  let config;
  try {
    const parsed = parseFlags(argv);
    if (parsed.help) {
      process.stdout.write(helpText('\n  taskbatch-worker --local --help   runs one worker against a batch from the terminal\n'));
      return EXIT_CODES.ok;
    }
    config = loadConfig(process.env, parsed.flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`taskbatch-worker: ${err.message}\n`);
      return EXIT_CODES.config;
    }
    throw err;
  }
  // Handlers (and the commands they run) must not inherit Redis credentials.
  for (const name of SECRET_ENV) delete process.env[name];
  const logger = createLogger({ level: config.logLevel, base: { worker: config.workerId, namespace: config.batch.namespace, batch: config.batch.name } });
  process.on('unhandledRejection', (reason) => {
    logger.warn('Ignored an unhandled promise rejection (a handler left a promise without a catch?)', { error: reason instanceof Error ? reason : String(reason) });
  });
  const result = await runWorker(config, { logger });
  return result.exitCode;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`taskbatch-worker: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exit(EXIT_CODES.internal);
  },
);
