/** The real node's configuration and host-side scripts, as pure functions. */
import { parse } from 'yaml';
import { cniConfList, containerdConfig, corefile, DEFAULT_NODE_NETWORK, kubeletConfig, kubeProxyConfig } from '../../localcluster/realnode/config.js';
import { clusterObjects, firstHost, hostTeardownScript, nodeInitScript } from '../../localcluster/realnode/node.js';
import { parseEndpoint } from '../../localcluster/realnode/relay.js';
import { uplinkChainRules, uplinkPacketCount } from '../../localcluster/realnode/uplink.js';

const net = DEFAULT_NODE_NETWORK;

test('pods get routes for the Service range and the node link only: no default route', () => {
  const conf = JSON.parse(cniConfList(net, '/s/ipam')) as {
    plugins: { type: string; ipMasq: boolean; isDefaultGateway?: boolean; ipam: { routes: { dst: string }[]; ranges: { subnet: string }[][]; dataDir: string } }[];
  };
  const bridge = conf.plugins[0]!;
  expect(bridge.type).toBe('bridge');
  expect(bridge.ipMasq).toBe(false);
  expect(bridge.isDefaultGateway).toBeUndefined();
  expect(bridge.ipam.routes.map((r) => r.dst)).toEqual([net.serviceCIDR, net.linkCIDR]);
  expect(bridge.ipam.routes.map((r) => r.dst)).not.toContain('0.0.0.0/0');
  expect(bridge.ipam.ranges[0]![0]!.subnet).toBe(net.podCIDR);
  expect(bridge.ipam.dataDir).toBe('/s/ipam');
});

test('containerd uses its own root, state, socket and runc root; cgroupfs; no oom_score_adj lowering', () => {
  const toml = containerdConfig({
    root: '/s/root',
    state: '/s/state',
    socket: '/s/c.sock',
    runcRoot: '/s/runc',
    optDir: '/s/opt',
    cniConfDir: '/s/net.d',
    cniBinDir: '/usr/lib/cni',
    runcBinary: '/usr/sbin/runc',
    sandboxImage: 'localhost/pause:1',
  });
  expect(toml).toContain('root = "/s/root"');
  expect(toml).toContain('address = "/s/c.sock"');
  expect(toml).toContain('SystemdCgroup = false');
  expect(toml).toContain('restrict_oom_score_adj = true');
  expect(toml).toContain('sandbox_image = "localhost/pause:1"');
  expect(toml).toContain('Root = "/s/runc"');
});

test("the kubelet serves on the node address with the cluster CA and talks to the node's containerd", () => {
  const cfg = parse(
    kubeletConfig({
      net,
      cgroupRoot: '/taskbatch-node-x',
      maxPods: 60,
      paths: {
        caFile: '/ca.crt',
        tlsCertFile: '/k.crt',
        tlsKeyFile: '/k.key',
        containerdSocket: '/s/c.sock',
        resolvConf: '/s/resolv.conf',
        podLogsDir: '/s/logs',
        volumePluginDir: '/s/vp',
        staticPodPath: '/s/m',
      },
    }),
  ) as Record<string, unknown>;
  expect(cfg).toMatchObject({
    kind: 'KubeletConfiguration',
    address: net.nodeIP,
    readOnlyPort: 0,
    cgroupDriver: 'cgroupfs',
    cgroupRoot: '/taskbatch-node-x',
    failSwapOn: false,
    failCgroupV1: false,
    containerRuntimeEndpoint: 'unix:///s/c.sock',
    clusterDNS: [net.dnsServiceIP],
    authentication: { anonymous: { enabled: false }, webhook: { enabled: true }, x509: { clientCAFile: '/ca.crt' } },
    authorization: { mode: 'Webhook' },
    imageGCHighThresholdPercent: 100,
  });
});

test('kube-proxy: iptables mode, no conntrack sysctl changes, no localhost NodePorts', () => {
  const cfg = parse(kubeProxyConfig({ net, kubeconfig: '/kp.kubeconfig', nodeName: 'n1' })) as Record<string, unknown>;
  expect(cfg).toMatchObject({ mode: 'iptables', clusterCIDR: net.podCIDR, hostnameOverride: 'n1', iptables: { localhostNodePorts: false }, conntrack: { maxPerCore: 0, min: 0 } });
});

test('CoreDNS serves cluster.local on the node address and forwards nothing off the machine', () => {
  const text = corefile(net, '/dns.kubeconfig', 'ctx');
  expect(text).toContain(`bind ${net.nodeIP}`);
  expect(text).toContain('kubeconfig /dns.kubeconfig ctx');
  expect(text).not.toMatch(/\bforward\b/);
});

test('cluster objects: the kubernetes and kube-dns endpoints point at the node', () => {
  const text = clusterObjects(net);
  expect(text).toContain(`clusterIP: ${net.dnsServiceIP}`);
  expect(text.match(new RegExp(`addresses: \\["${net.nodeIP.replace(/\./g, '\\.')}"\\]`, 'g'))).toHaveLength(2);
  expect(firstHost(net.serviceCIDR)).toBe('10.0.0.1');
});

test('the node init keeps writes off the host: private /run and /var/log, diverted sysctls, then pause', () => {
  const script = nodeInitScript({ stateDir: '/s', pause: '/bin/pause', maskedDirs: ['/var/lib/kubelet'] });
  expect(script).toContain('mount -t tmpfs -o mode=0755 tmpfs /run');
  expect(script).toContain("mount -t tmpfs -o mode=0755 tmpfs '/var/lib/kubelet'");
  expect(script).toContain("mount --bind '/s/sysctl/vm_overcommit_memory' /proc/sys/vm/overcommit_memory");
  expect(script.trim().split('\n').pop()).toBe("exec '/bin/pause'");
});

test('the host teardown removes cgroups, the veth, the counter chain and only the dirs it created', () => {
  const script = hostTeardownScript({ hostVeth: 'tbh1', uplinkChain: 'TB-UPLINK-1', cgroupDirs: ['/sys/fs/cgroup/memory/taskbatch-node-1'], createdDirs: ['/var/lib/cni'], lockFile: '/tmp/l' });
  expect(script).toContain("ip link del 'tbh1'");
  expect(script).toContain("iptables -w -X 'TB-UPLINK-1'");
  expect(script).toContain("find '/sys/fs/cgroup/memory/taskbatch-node-1' -depth -type d -exec rmdir {} +");
  expect(script).toContain("rmdir '/var/lib/cni'");
});

test('the uplink counter: rules and the packet sum (veth and loopback rows excluded)', () => {
  const rules = uplinkChainRules('TB-UPLINK-1', 'tbh1', net);
  expect(rules[0]).toEqual(['-N', 'TB-UPLINK-1']);
  expect(rules).toContainEqual(['-I', 'OUTPUT', '1', '-j', 'TB-UPLINK-1']);
  expect(rules).toContainEqual(['-I', 'FORWARD', '1', '-j', 'TB-UPLINK-1']);
  expect(rules).toContainEqual(['-A', 'TB-UPLINK-1', '-s', net.podCIDR, '-j', 'RETURN']);
  const listing = `Chain TB-UPLINK-1 (2 references)
    pkts      bytes target     prot opt in     out     source               destination
      12      720 RETURN     all  --  *      lo      0.0.0.0/0            0.0.0.0/0
     900    54000 RETURN     all  --  *      tbh1    0.0.0.0/0            0.0.0.0/0
       0        0 RETURN     all  --  *      *       0.0.0.0/0            10.244.0.0/24
       3      180 RETURN     all  --  *      *       0.0.0.0/0            10.0.0.0/24
       0        0 RETURN     all  --  *      *       10.244.0.0/24        0.0.0.0/0
`;
  expect(uplinkPacketCount(listing)).toBe(3);
});

test('relay endpoints parse, and bad ones are named', () => {
  expect(parseEndpoint('tcp:127.0.0.1:6443')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 6443 });
  expect(parseEndpoint('unix:/s/api.sock')).toEqual({ kind: 'unix', path: '/s/api.sock' });
  expect(() => parseEndpoint('http://x')).toThrow(/expected tcp:HOST:PORT or unix:PATH/);
});
