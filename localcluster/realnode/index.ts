/** The real-node mode of the local cluster: kubelet + containerd instead of the node agent. */
export { startRealNode, realNodeSupport, type RealNode, type RealNodeOptions, type RealNodeSupport, type RealNodeTimings } from './node.js';
export { startRealCluster, REAL_NODE_CONTROLLERS, type RealCluster } from './cluster.js';
export { imageArchives } from './images.js';
export { DEFAULT_NODE_NETWORK, type NodeNetwork } from './config.js';
