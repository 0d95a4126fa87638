/**
 * Errors of the SDK. Each says what went wrong and what to do; `code` is stable (the CLI maps
 * codes to exit codes). Queue errors (InvalidArgument, PayloadTooLarge, BatchClosed,
 * BatchStateLost, ProtocolVersionMismatch) come through unchanged from taskbatch/queue.
 */
export type SdkErrorCode = 'BatchNotFound' | 'Connection' | 'Forbidden' | 'PortForward' | 'CallTimeout' | 'ClientClosed' | 'WaitTimeout' | 'NotOpen' | 'Usage';

export class TaskBatchError extends Error {
  constructor(
    readonly code: SdkErrorCode,
    message: string,
  ) {
    super(message);
    this.name = `${code}Error`;
  }
}

/** The TaskBatch (or, with only a Redis URL, the batch's state in Redis) does not exist. */
export class BatchNotFoundError extends TaskBatchError {
  constructor(message: string) {
    super('BatchNotFound', message);
  }
}

/** Redis or the API server could not be reached (or refused the credentials). */
export class ConnectionError extends TaskBatchError {
  constructor(message: string) {
    super('Connection', message);
  }
}

/** The API server denied a request (RBAC). */
export class ForbiddenError extends TaskBatchError {
  constructor(message: string) {
    super('Forbidden', message);
  }
}

/** A port-forward through the API server could not be set up or broke. */
export class PortForwardError extends TaskBatchError {
  constructor(message: string) {
    super('PortForward', message);
  }
}

/** The batch does not take items from producers (it is not `spec.open`, or it was closed). */
export class NotOpenError extends TaskBatchError {
  constructor(message: string) {
    super('NotOpen', message);
  }
}

/** A remote call got no answer in time. It may still run later (delivery is at-least-once). */
export class CallTimeoutError extends TaskBatchError {
  constructor(
    message: string,
    readonly callId: string,
    readonly fn: string,
  ) {
    super('CallTimeout', message);
  }
}

/** The client was closed while a call or wait was in progress. */
export class ClientClosedError extends TaskBatchError {
  constructor(message = 'the taskbatch client was closed') {
    super('ClientClosed', message);
  }
}

/** wait() gave up after its timeout; the batch keeps running. */
export class WaitTimeoutError extends TaskBatchError {
  constructor(message: string) {
    super('WaitTimeout', message);
  }
}

/**
 * The remote function threw. `name` and `message` are the remote error's own (a RangeError
 * thrown on the worker arrives as an error named "RangeError"); `remoteStack` is its stack.
 */
export class RemoteCallError extends Error {
  readonly remote = true;
  constructor(
    name: string,
    message: string,
    readonly fn: string,
    readonly callId: string,
    readonly attempts: number,
    readonly remoteStack?: string,
  ) {
    super(message);
    this.name = name || 'Error';
  }
}
