// Public API of the SDK (package export "taskbatch/sdk"). See docs/sdk.md.
export { connect, TaskBatchClient, type ConnectOptions, type ProxyOptions } from './client.js';
export {
  BatchHandle,
  type BatchStatus,
  type SubmitItem,
  type SubmitOptions,
  type SubmitResult,
  type WaitOptions,
  type WaitResult,
} from './batch.js';
export { CallDispatcher, createProxy, type CallArgs, type CallOptions, type CallStats, type DroppedReplyKind, type Remote } from './calls.js';
export { ProgressTracker, formatProgress, formatDuration, type Progress } from './progress.js';
export type { RedisEndpoint, KubeAccessOptions } from './kube.js';
export type { PortForwardMode } from './connection.js';
export { PortForward, type ForwardTarget, type PortForwardStats } from './port-forward.js';
export {
  TaskBatchError,
  BatchNotFoundError,
  ConnectionError,
  ForbiddenError,
  PortForwardError,
  NotOpenError,
  CallTimeoutError,
  ClientClosedError,
  WaitTimeoutError,
  RemoteCallError,
  type SdkErrorCode,
} from './errors.js';
// Errors of the queue protocol that SDK calls can throw.
export { InvalidArgumentError, PayloadTooLargeError, BatchStateLostError, ProtocolVersionError, BatchClosedError, QueueError } from '../queue/errors.js';
export type { StoredResult, DeadLetter, Counts, BatchSnapshot } from '../queue/queue.js';
export type { HandlerContext } from '../worker/handler/api.js';
