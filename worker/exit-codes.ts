/** How the worker process ends. Kubernetes shows the code in the pod's status. */
export const EXIT_CODES = {
  /** The batch is complete, or a graceful shutdown (SIGTERM, drain request) finished. */
  ok: 0,
  /** Unexpected internal error, or the shutdown did not finish within its bound. */
  internal: 1,
  /** Invalid configuration (environment variables or flags). */
  config: 2,
  /** The handler could not be loaded: executors failed to start. */
  handlerStart: 3,
  /** The batch's state was lost from Redis (or never created) for longer than TASKBATCH_STATE_LOST_EXIT_SECONDS. */
  stateLost: 4,
  /** Redis holds the batch under another queue protocol version (mixed releases). */
  protocolMismatch: 5,
  /** Local run: the batch finished with permanently failed items. */
  itemsFailed: 6,
  /** A second SIGINT / SIGTERM during a graceful shutdown: exit at once (128 + signal number). */
  forcedSigint: 130,
  forcedSigterm: 143,
} as const;
