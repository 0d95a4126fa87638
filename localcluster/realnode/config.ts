/**
 * The real node's configuration files, as pure functions of its addresses and paths: containerd,
 * the CNI network, the kubelet, kube-proxy and CoreDNS. Kept free of I/O so they are table-tested
 * and so docs/localcluster.md can point at one place for every setting.
 */
import { stringify } from 'yaml';

/** The node's addresses. Everything here exists only inside the node's own network namespace,
 * except `hostIP`, the host end of the veth pair that links the host to that namespace. */
export interface NodeNetwork {
  /** The host's end of the veth pair, e.g. 10.245.0.1. */
  hostIP: string;
  /** The node's address (its end of the veth pair, inside the node namespace), e.g. 10.245.0.2. */
  nodeIP: string;
  /** The /30 holding hostIP and nodeIP. */
  linkCIDR: string;
  /** Pod addresses (CNI bridge + host-local), e.g. 10.244.0.0/24. */
  podCIDR: string;
  /** The bridge's address, the pods' gateway, e.g. 10.244.0.1. */
  podGateway: string;
  /** The API server's Service range (kube-apiserver --service-cluster-ip-range). */
  serviceCIDR: string;
  /** The kube-dns Service address inside serviceCIDR. */
  dnsServiceIP: string;
  /** Name of the Linux bridge pods attach to. */
  bridge: string;
}

export const DEFAULT_NODE_NETWORK: NodeNetwork = {
  hostIP: '10.245.0.1',
  nodeIP: '10.245.0.2',
  linkCIDR: '10.245.0.0/30',
  podCIDR: '10.244.0.0/24',
  podGateway: '10.244.0.1',
  serviceCIDR: '10.0.0.0/24',
  dnsServiceIP: '10.0.0.10',
  bridge: 'tb0',
};

export interface ContainerdPaths {
  root: string;
  state: string;
  socket: string;
  runcRoot: string;
  optDir: string;
  cniConfDir: string;
  cniBinDir: string;
  runcBinary: string;
  sandboxImage: string;
}

/** containerd 1.6 (Debian's) config: own root, state and socket; runc with cgroupfs; no SELinux/AppArmor. */
export function containerdConfig(p: ContainerdPaths): string {
  const q = (s: string): string => JSON.stringify(s);
  return `version = 2
root = ${q(p.root)}
state = ${q(p.state)}
[grpc]
  address = ${q(p.socket)}
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ${q(p.sandboxImage)}
  enable_selinux = false
  disable_apparmor = true
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which these machines withhold.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = ${q(p.runcBinary)}
        Root = ${q(p.runcRoot)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${q(p.cniBinDir)}
    conf_dir = ${q(p.cniConfDir)}
[plugins."io.containerd.internal.v1.opt"]
  path = ${q(p.optDir)}
`;
}

/**
 * The pods' network: a bridge with host-local addresses. Pods get routes for the Service range and
 * the node link only — no default route, so nothing a pod sends can leave the machine.
 */
export function cniConfList(net: NodeNetwork, ipamDataDir: string): string {
  return (
    JSON.stringify(
      {
        cniVersion: '1.0.0',
        name: 'taskbatch',
        plugins: [
          {
            type: 'bridge',
            bridge: net.bridge,
            isGateway: true,
            ipMasq: false,
            hairpinMode: true,
            ipam: {
              type: 'host-local',
              dataDir: ipamDataDir,
              ranges: [[{ subnet: net.podCIDR, gateway: net.podGateway }]],
              routes: [{ dst: net.serviceCIDR }, { dst: net.linkCIDR }],
            },
          },
        ],
      },
      null,
      2,
    ) + '\n'
  );
}

export interface KubeletPaths {
  caFile: string;
  tlsCertFile: string;
  tlsKeyFile: string;
  containerdSocket: string;
  resolvConf: string;
  podLogsDir: string;
  volumePluginDir: string;
  staticPodPath: string;
}

export interface KubeletSettings {
  net: NodeNetwork;
  paths: KubeletPaths;
  /** Parent cgroup of every pod cgroup, created by the harness and removed at teardown. */
  cgroupRoot: string;
  maxPods: number;
}

/** KubeletConfiguration: the settings that worked on these machines (cgroup v1 hybrid, no CAP_SYS_RESOURCE). */
export function kubeletConfig(s: KubeletSettings): string {
  return stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: s.net.nodeIP,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    tlsCertFile: s.paths.tlsCertFile,
    tlsPrivateKeyFile: s.paths.tlsKeyFile,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: s.paths.caFile } },
    authorization: { mode: 'Webhook' },
    cgroupDriver: 'cgroupfs',
    cgroupsPerQOS: true,
    cgroupRoot: s.cgroupRoot,
    enforceNodeAllocatable: ['pods'],
    failSwapOn: false,
    failCgroupV1: false,
    containerRuntimeEndpoint: `unix://${s.paths.containerdSocket}`,
    imageServiceEndpoint: `unix://${s.paths.containerdSocket}`,
    resolvConf: s.paths.resolvConf,
    podLogsDir: s.paths.podLogsDir,
    volumePluginDir: s.paths.volumePluginDir,
    staticPodPath: s.paths.staticPodPath,
    clusterDNS: [s.net.dnsServiceIP],
    clusterDomain: 'cluster.local',
    maxPods: s.maxPods,
    // Nothing can be pulled here: never garbage-collect the images the harness loaded.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { 'memory.available': '100Mi', 'nodefs.available': '1%', 'imagefs.available': '1%', 'nodefs.inodesFree': '1%' },
    // Registered Ready quickly and kept Ready with frequent status updates.
    nodeStatusUpdateFrequency: '4s',
    nodeStatusReportFrequency: '1m',
    syncFrequency: '10s',
    fileCheckFrequency: '20s',
    serializeImagePulls: false,
    // A pod's kubelet-made cgroups and its processes die with the node's PID namespace.
    shutdownGracePeriod: '0s',
    logging: { format: 'text' },
  });
}

export interface KubeProxySettings {
  net: NodeNetwork;
  kubeconfig: string;
  nodeName: string;
}

/** kube-proxy in iptables mode, touching no host sysctl (conntrack values 0 keep the kernel's). */
export function kubeProxyConfig(s: KubeProxySettings): string {
  return stringify({
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    clientConnection: { kubeconfig: s.kubeconfig },
    hostnameOverride: s.nodeName,
    mode: 'iptables',
    clusterCIDR: s.net.podCIDR,
    detectLocalMode: 'ClusterCIDR',
    iptables: { localhostNodePorts: false, masqueradeAll: false, syncPeriod: '30s', minSyncPeriod: '0s' },
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    metricsBindAddress: '127.0.0.1:10249',
    healthzBindAddress: '127.0.0.1:10256',
  });
}

/**
 * CoreDNS for cluster.local, on the node's address (the kube-dns Service's only endpoint). No
 * `forward`: names outside the cluster are not resolved, so no query leaves the machine.
 */
export function corefile(net: NodeNetwork, kubeconfig: string, context: string): string {
  return `.:53 {
    bind ${net.nodeIP}
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig ${kubeconfig} ${context}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
`;
}
