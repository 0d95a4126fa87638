/**
 * A control plane plus one real node, as the demo, `main.js --real-node` and the e2e tier start
 * them: the controller manager also runs the endpoint controllers (Services need them), and the
 * API server checks the kubelet's serving certificate against the cluster CA.
 */
import { DEFAULT_CONTROLLERS, startControlPlane, type ControlPlane } from '../controlplane.js';
import { startRealNode, type RealNode, type RealNodeOptions } from './node.js';

/** kube-controller-manager controllers a real node needs on top of DEFAULT_CONTROLLERS (Services). */
export const REAL_NODE_CONTROLLERS: readonly string[] = ['endpointslice-controller', 'endpointslice-mirroring-controller', 'endpoints-controller'];

export interface RealCluster {
  cp: ControlPlane;
  node: RealNode;
  /** Stops the node, then the control plane. */
  stop(): Promise<void>;
}

export async function startRealCluster(o: { record?: boolean; node?: Omit<RealNodeOptions, 'controlPlane'> } = {}): Promise<RealCluster> {
  const cp = await startControlPlane({
    controllerManager: true,
    controllers: [...DEFAULT_CONTROLLERS, ...REAL_NODE_CONTROLLERS],
    verifyKubeletServingCerts: true,
    ...(o.record ? { record: true } : {}),
  });
  let node: RealNode;
  try {
    node = await startRealNode({ ...o.node, controlPlane: cp });
  } catch (err) {
    await cp.stop();
    throw err;
  }
  return {
    cp,
    node,
    stop: async () => {
      await node.stop();
      await cp.stop();
    },
  };
}
