/** Errors of the queue protocol. Each names the batch it concerns and what to do. */

export type QueueErrorCode = 'InvalidArgument' | 'PayloadTooLarge' | 'BatchStateLost' | 'ProtocolVersionMismatch' | 'BatchClosed';

export class QueueError extends Error {
  constructor(
    readonly code: QueueErrorCode,
    message: string,
    readonly batch?: string,
  ) {
    super(batch ? `batch ${batch}: ${message}` : message);
    this.name = code;
  }
}

/** Bad input; nothing was written. */
export class InvalidArgumentError extends QueueError {
  constructor(message: string, batch?: string) {
    super('InvalidArgument', message, batch);
  }
}

export class PayloadTooLargeError extends QueueError {
  constructor(message: string, batch?: string) {
    super('PayloadTooLarge', message, batch);
  }
}

/**
 * The batch's state is gone from Redis (restart without persistence, FLUSHALL, failover
 * to a stale replica) or was recreated under another epoch. Distinct from an empty batch.
 */
export class BatchStateLostError extends QueueError {
  constructor(
    message: string,
    batch?: string,
    /** Some of the batch's keys are gone while its meta hash survived (eviction, a stray DEL). */
    readonly partial = false,
  ) {
    super('BatchStateLost', message, batch);
  }
}

export class ProtocolVersionError extends QueueError {
  constructor(message: string, batch?: string) {
    super('ProtocolVersionMismatch', message, batch);
  }
}

export class BatchClosedError extends QueueError {
  constructor(message: string, batch?: string) {
    super('BatchClosed', message, batch);
  }
}

/** Maps the scripts' tagged error replies ("TBLOST ...") to typed errors. */
export function translateScriptError(err: unknown, batch: string): unknown {
  if (!(err instanceof Error)) return err;
  const match = /^(TBLOST|TBPARTIAL|TBVERSION|TBCLOSED) (.*)$/s.exec(err.message);
  if (!match) return err;
  const [, tag, text = ''] = match;
  switch (tag) {
    case 'TBLOST':
      return new BatchStateLostError(text, batch);
    case 'TBPARTIAL':
      return new BatchStateLostError(text, batch, true);
    case 'TBVERSION':
      return new ProtocolVersionError(`${text}; run workers, operator and clients of one release`, batch);
    default:
      return new BatchClosedError(text, batch);
  }
}
