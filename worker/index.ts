// Public API of the worker (package export "taskbatch/worker").

// Writing handlers
export { NonRetryableError, isNonRetryable, type Handler, type HandlerContext, type HandlerLog, type LogLevel } from './handler/api.js';
export { parseHandlerSpec, validateHandlerSpec, describeHandler, HandlerSpecError, type HandlerSpec, type ModuleSpec, type BuiltinSpec, type ShellSpec, type StdioSpec } from './handler/spec.js';
export { countPrimesBelow } from './handler/builtins/primes.js';
export { expandArgv } from './handler/builtins/shell.js';

// Executors (pools)
export {
  createExecutor,
  AsyncExecutor,
  RemotePool,
  ExecutorStartError,
  ExecutorClosedError,
  POOL_MODES,
  type Executor,
  type ExecutorOptions,
  type ExecutorHooks,
  type ExecutorStats,
  type Outcome,
  type PoolMode,
  type RestartReason,
  type RunOptions,
} from './executor/index.js';

// Running a worker
export { BatchWorker, type BatchWorkerOptions, type StopReason, type WorkerResult } from './batch-worker.js';
export { runWorker, connectWorkerRedis, type RunWorkerOptions } from './run.js';
export { loadConfig, parseFlags, helpText, ConfigError, SETTINGS, type WorkerConfig, type SettingDef } from './config.js';
export { runLocal, progressLine, type LocalRunOptions, type LocalRunResult } from './local-run.js';
export { EXIT_CODES } from './exit-codes.js';
export { WorkerMetrics } from './metrics.js';
export { createLogger, silentLogger, type Logger } from './log.js';
export { startHttpServer, type HttpServer } from './http.js';
export { startWatchdog, type Watchdog } from './watchdog.js';
