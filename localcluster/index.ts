/** The local cluster: a real control plane as local processes, and a node agent running pods as processes. */
export {
  startControlPlane,
  DEFAULT_CONTROLLERS,
  runCommand,
  type ControlPlane,
  type ControlPlaneOptions,
  type ControlPlaneTimings,
  type KubeconfigHandle,
  type ToolOptions,
  type ToolResult,
} from './controlplane.js';
export { startNodeAgent, type NodeAgent, type NodeAgentOptions } from './node-agent.js';
export type { PodProcessInfo } from './pod-runner.js';
export { defaultImageMap, findImageRule, resolveContainerCommand, type ImageRule, type ResolvedCommand } from './image-map.js';
export { expandVars, parseQuantity, resolveContainerEnv, EnvConfigError, type EnvSources, type EnvContext } from './pod-env.js';
export { kubeconfigYaml, writeKubeconfig, type KubeconfigSpec, type KubeconfigCredentials } from './kubeconfig.js';
export { findControlPlaneBinaries, repoRoot, cacheRoot, localClusterStateDir, type ControlPlaneBinaries } from './paths.js';
export { createLogger, type Logger } from './log.js';
export { startListWatch, type ListWatch, type ListWatchOptions, type WatchEventType } from './watch.js';
