/** The local cluster: a real control plane as local processes, and a node agent running pods as processes. */
export { startControlPlane, runCommand, type ControlPlane, type ToolOptions, type ToolResult } from './controlplane.js';
export { startNodeAgent, type NodeAgent } from './node-agent.js';
export { defaultImageMap, resolveContainerCommand } from './image-map.js';
export { expandVars, parseQuantity, resolveContainerEnv, EnvConfigError, type EnvSources } from './pod-env.js';
export { findControlPlaneBinaries, repoRoot } from './paths.js';
export { createLogger } from './log.js';
export { startListWatch } from './watch.js';
