/**
 * A real Kubernetes control plane as local processes, as controller-runtime's envtest runs it:
 * etcd and kube-apiserver on free loopback ports with their own temp dir, certificates made with
 * openssl, RBAC on, an admin kubeconfig (client cert in system:masters), optionally
 * kube-controller-manager. Everything runs in its own process group and is killed when the owner
 * exits, is interrupted, or dies (see reaper.ts).
 */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createCA, createSigningKeyPair, issueCert, readPem, type CertPair, type IssueOptions, type KeyPair } from './certs.js';
import { writeKubeconfig } from './kubeconfig.js';
import { createLogger, describeError, type Logger } from './log.js';
import { findControlPlaneBinaries, localClusterStateDir, type ControlPlaneBinaries } from './paths.js';
import { freePort } from './ports.js';
import { spawnManaged, tailFile, type ManagedProcess } from './process.js';
import { trackDir, untrackDir } from './reaper.js';

/** kube-controller-manager controllers started by default: the ones tests and the demo rely on. */
export const DEFAULT_CONTROLLERS: readonly string[] = [
  'garbage-collector-controller',
  'namespace-controller',
  'serviceaccount-controller',
  'serviceaccount-token-controller',
  'root-ca-certificate-publisher-controller',
  'clusterrole-aggregation-controller',
  'node-lifecycle-controller',
  'taint-eviction-controller',
  'pod-garbage-collector-controller',
  'deployment-controller',
  'replicaset-controller',
  'job-controller',
  'ttl-after-finished-controller',
];

export interface ControlPlaneOptions {
  /** Start kube-controller-manager too (garbage collector, namespaces, service accounts, ...). Default false. */
  controllerManager?: boolean;
  /** kube-controller-manager --controllers (default DEFAULT_CONTROLLERS). */
  controllers?: readonly string[];
  /**
   * Keep the ServiceAccount admission plugin on (pods get `default` and must name an existing
   * ServiceAccount). Default: on with the controller manager (which creates `default` SAs), off without.
   */
  serviceAccountAdmission?: boolean;
  /** Directory of the binaries (default: TASKBATCH_CONTROLPLANE_BIN, else `hack/build-controlplane.sh --print-dir`). */
  binDir?: string;
  /** Parent of the control plane's temp dir (default os.tmpdir()). */
  tmpRoot?: string;
  /** Record the kubeconfig under ~/.cache/taskbatch/local-cluster/ for hack/kubeconfig.sh. Default false. */
  record?: boolean;
  /** Keep the temp dir (data, certs, logs) after stop(). Default: TASKBATCH_LOCALCLUSTER_KEEP=1. */
  keepDir?: boolean;
  extraApiServerArgs?: string[];
  extraControllerManagerArgs?: string[];
  /**
   * Verify kubelets' serving certificates against the cluster CA (`--kubelet-certificate-authority`),
   * as a real cluster does. Only for real kubelets whose serving certificate the CA signed
   * (the node agent's is self-signed). Default false.
   */
  verifyKubeletServingCerts?: boolean;
  /** Per component (default 60 s; 2 cores are slow to start kube-apiserver). */
  startTimeoutMs?: number;
  /**
   * Audit writes (AUDIT_POLICY: create/update/patch/delete on taskbatch.dev, pods, events and
   * leases, level Metadata) to a JSON-lines log at `ControlPlane.auditLogPath`, e.g. to check
   * who wrote what when. Default false.
   */
  audit?: boolean;
  logger?: Logger;
}

export interface KubeconfigHandle {
  path: string;
  kubeConfig: KubeConfig;
}

export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ToolOptions {
  /** Written to stdin (e.g. a manifest for `kubectl apply -f -`). */
  input?: string;
  /** Kubeconfig to use instead of the admin one. */
  kubeconfigPath?: string;
  cwd?: string;
  timeoutMs?: number;
}

export interface ControlPlaneTimings {
  certsMs: number;
  etcdMs: number;
  apiServerMs: number;
  controllerManagerMs?: number;
  totalMs: number;
}

export interface ControlPlane {
  /** Admin kubeconfig (user `admin` in group system:masters). */
  readonly kubeconfigPath: string;
  readonly kubeConfig: KubeConfig;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  readonly host: string;
  readonly port: number;
  /** etcd's client URL (http, loopback), e.g. for tests that compact or inspect storage. */
  readonly etcdUrl: string;
  readonly binDir: string;
  readonly binaries: ControlPlaneBinaries;
  /** The temp dir: certs/, etcd/, logs/, users/. */
  readonly dir: string;
  /** The CA that signed the serving and client certificates (the cluster's ca.crt). */
  readonly caCertPath: string;
  readonly logDir: string;
  readonly controllerManager: boolean;
  /** With `audit: true`: kube-apiserver's audit log, one JSON audit.k8s.io/v1 Event per line (stage ResponseComplete). */
  readonly auditLogPath?: string;
  readonly timings: ControlPlaneTimings;
  /** pids of the running components by name (etcd, kube-apiserver, kube-controller-manager). */
  processIds(): Record<string, number>;
  /** A kubeconfig for a user authenticated by a client certificate (CN = user, O = groups); no rights until RBAC grants some. */
  createUserKubeconfig(user: string, groups?: string[]): Promise<KubeconfigHandle>;
  /** A kubeconfig holding a TokenRequest token of a ServiceAccount (which must exist). */
  createServiceAccountKubeconfig(namespace: string, serviceAccount: string, expirationSeconds?: number): Promise<KubeconfigHandle & { token: string }>;
  /** Issues a certificate signed by the cluster CA (for node components: kubelet, kube-proxy, CoreDNS). */
  issueCertificate(dir: string, opts: IssueOptions): Promise<CertPair>;
  /** Runs the built kubectl against this cluster (never throws on a non-zero exit). */
  kubectl(args: string[], options?: ToolOptions): Promise<ToolResult>;
  /** Runs the built helm against this cluster, with helm's cache/config/data dirs inside the temp dir. */
  helm(args: string[], options?: ToolOptions): Promise<ToolResult>;
  /** Stops every component (SIGTERM, then SIGKILL), removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

interface Certs {
  ca: CertPair;
  serving: CertPair;
  admin: CertPair;
  kubeletClient: CertPair;
  serviceAccount: KeyPair;
}

const HOST = '127.0.0.1';

/**
 * Who wrote which object when: metadata (user, user agent, verb, object, timestamps, response
 * code) of every write to the kinds the operator touches; reads are not logged. One event per
 * request (RequestReceived omitted), written before the response is sent (the log backend's
 * default blocking mode), so a finished request is in the log.
 */
const AUDIT_POLICY = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
    resources:
      - group: taskbatch.dev
      - group: ""
        resources: [pods, pods/*, events]
      - group: coordination.k8s.io
        resources: [leases]
  - level: None
`;

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const log = options.logger ?? createLogger('controlplane');
  const t0 = Date.now();
  const binaries = findControlPlaneBinaries(options.binDir);
  const dir = mkdtempSync(join(options.tmpRoot ?? tmpdir(), 'tb-cp-'));
  const keepDir = options.keepDir ?? process.env.TASKBATCH_LOCALCLUSTER_KEEP === '1';
  if (!keepDir) trackDir(dir);
  const certDir = join(dir, 'certs');
  const logDir = join(dir, 'logs');
  const usersDir = join(dir, 'users');
  for (const d of [certDir, logDir, usersDir, join(dir, 'etcd'), join(dir, 'helm')]) mkdirSync(d, { recursive: true });
  const timeoutMs = options.startTimeoutMs ?? 60_000;
  const processes: ManagedProcess[] = [];
  let recordedPath: string | undefined;
  let stopped = false;

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // Reverse start order: controller manager, API server, etcd.
    for (const p of [...processes].reverse()) await p.stop(5000);
    if (recordedPath) removeRecord(recordedPath);
    if (!keepDir) {
      rmSync(dir, { recursive: true, force: true });
      untrackDir(dir);
    }
    log.info('Stopped control plane', { dir });
  };

  try {
    const certs = await makeCerts(certDir);
    const certsMs = Date.now() - t0;

    const tEtcd = Date.now();
    const etcdUrl = await retryOnPortClash('etcd', async () => {
      const clientPort = await freePort(HOST);
      const peerPort = await freePort(HOST);
      const url = `http://${HOST}:${clientPort}`;
      const peerUrl = `http://${HOST}:${peerPort}`;
      const proc = await spawnManaged({
        name: 'etcd',
        command: binaries.etcd,
        args: [
          '--name=default',
          `--data-dir=${join(dir, 'etcd')}`,
          `--listen-client-urls=${url}`,
          `--advertise-client-urls=${url}`,
          `--listen-peer-urls=${peerUrl}`,
          `--initial-advertise-peer-urls=${peerUrl}`,
          `--initial-cluster=default=${peerUrl}`,
          '--unsafe-no-fsync=true',
          '--log-level=warn',
          '--quota-backend-bytes=2147483648',
        ],
        logFile: join(logDir, 'etcd.log'),
        env: baseEnv(),
      });
      processes.push(proc);
      await waitReady('etcd', proc, timeoutMs, async () => {
        const res = await fetch(`${url}/health`);
        const body = (await res.json()) as { health?: string };
        return res.ok && body.health === 'true';
      });
      return url;
    });
    const etcdMs = Date.now() - tEtcd;

    let auditLogPath: string | undefined;
    const auditArgs: string[] = [];
    if (options.audit) {
      const policyPath = join(dir, 'audit-policy.yaml');
      writeFileSync(policyPath, AUDIT_POLICY);
      auditLogPath = join(logDir, 'audit.log');
      // maxsize 0: never rotated, so a test reads every event from one file.
      auditArgs.push(`--audit-policy-file=${policyPath}`, `--audit-log-path=${auditLogPath}`, '--audit-log-format=json', '--audit-log-maxsize=0');
    }

    const tApi = Date.now();
    const saAdmission = options.serviceAccountAdmission ?? options.controllerManager === true;
    const port = await retryOnPortClash('kube-apiserver', async () => {
      const apiPort = await freePort(HOST);
      const server = `https://${HOST}:${apiPort}`;
      const proc = await spawnManaged({
        name: 'kube-apiserver',
        command: binaries['kube-apiserver'],
        args: [
          `--etcd-servers=${etcdUrl}`,
          `--bind-address=${HOST}`,
          `--advertise-address=${HOST}`,
          `--secure-port=${apiPort}`,
          `--cert-dir=${certDir}`,
          `--tls-cert-file=${certs.serving.certPath}`,
          `--tls-private-key-file=${certs.serving.keyPath}`,
          `--client-ca-file=${certs.ca.certPath}`,
          '--authorization-mode=RBAC',
          '--service-cluster-ip-range=10.0.0.0/24',
          '--allow-privileged=true',
          `--service-account-issuer=${server}`,
          `--service-account-key-file=${certs.serviceAccount.publicKeyPath}`,
          `--service-account-signing-key-file=${certs.serviceAccount.privateKeyPath}`,
          ...(saAdmission ? [] : ['--disable-admission-plugins=ServiceAccount']),
          // The node agent serves pod logs like a kubelet, so `kubectl logs` works.
          '--kubelet-preferred-address-types=InternalIP',
          `--kubelet-client-certificate=${certs.kubeletClient.certPath}`,
          `--kubelet-client-key=${certs.kubeletClient.keyPath}`,
          ...(options.verifyKubeletServingCerts ? [`--kubelet-certificate-authority=${certs.ca.certPath}`] : []),
          // No Services network here; keep the API server from managing endpoints for itself.
          '--endpoint-reconciler-type=none',
          '--enable-priority-and-fairness=false',
          '--profiling=false',
          ...auditArgs,
          ...(options.extraApiServerArgs ?? []),
        ],
        logFile: join(logDir, 'kube-apiserver.log'),
        env: baseEnv(),
      });
      processes.push(proc);
      await waitReady('kube-apiserver', proc, timeoutMs, async () => (await httpsGet(`${server}/readyz`, certs)).status === 200);
      return apiPort;
    });
    const apiServerMs = Date.now() - tApi;
    const server = `https://${HOST}:${port}`;

    const kubeconfigPath = join(dir, 'admin.kubeconfig');
    const caPem = readPem(certs.ca.certPath);
    const kubeConfig = writeKubeconfig(kubeconfigPath, {
      name: 'taskbatch-local',
      server,
      caPem,
      credentials: { kind: 'clientCert', certPem: readPem(certs.admin.certPath), keyPem: readPem(certs.admin.keyPath) },
    });
    await waitFor('the default namespace', timeoutMs, async () => {
      try {
        await kubeConfig.makeApiClient(CoreV1Api).readNamespace({ name: 'default' });
        return true;
      } catch {
        return false;
      }
    });

    let controllerManagerMs: number | undefined;
    if (options.controllerManager) {
      const tKcm = Date.now();
      await retryOnPortClash('kube-controller-manager', async () => {
        const kcmPort = await freePort(HOST);
        const kcmCertDir = join(dir, 'kcm-certs');
        mkdirSync(kcmCertDir, { recursive: true });
        const proc = await spawnManaged({
          name: 'kube-controller-manager',
          command: binaries['kube-controller-manager'],
          args: [
            `--kubeconfig=${kubeconfigPath}`,
            `--authentication-kubeconfig=${kubeconfigPath}`,
            `--authorization-kubeconfig=${kubeconfigPath}`,
            '--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics',
            `--bind-address=${HOST}`,
            `--secure-port=${kcmPort}`,
            `--cert-dir=${kcmCertDir}`,
            '--leader-elect=false',
            `--controllers=${(options.controllers ?? DEFAULT_CONTROLLERS).join(',')}`,
            `--root-ca-file=${certs.ca.certPath}`,
            `--service-account-private-key-file=${certs.serviceAccount.privateKeyPath}`,
            '--use-service-account-credentials=false',
            '--kube-api-qps=200',
            '--kube-api-burst=400',
            ...(options.extraControllerManagerArgs ?? []),
          ],
          logFile: join(logDir, 'kube-controller-manager.log'),
          env: baseEnv(),
        });
        processes.push(proc);
        await waitReady('kube-controller-manager', proc, timeoutMs, async () => (await httpsGet(`https://${HOST}:${kcmPort}/healthz`, undefined)).status === 200);
      });
      // The serviceaccount controller has run once `default` has its ServiceAccount.
      await waitFor('the default ServiceAccount', timeoutMs, async () => {
        try {
          await kubeConfig.makeApiClient(CoreV1Api).readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
          return true;
        } catch {
          return false;
        }
      });
      controllerManagerMs = Date.now() - tKcm;
    }

    const timings: ControlPlaneTimings = { certsMs, etcdMs, apiServerMs, ...(controllerManagerMs !== undefined ? { controllerManagerMs } : {}), totalMs: Date.now() - t0 };
    if (options.record) recordedPath = record(kubeconfigPath, server, binaries.dir);
    log.info('Started control plane', { server, dir, ...timings });

    const runTool =
      (bin: string, extraEnv: NodeJS.ProcessEnv) =>
      (args: string[], o: ToolOptions = {}): Promise<ToolResult> =>
        runCommand(bin, args, { ...o, env: { ...process.env, ...extraEnv, KUBECONFIG: o.kubeconfigPath ?? kubeconfigPath } });

    return {
      kubeconfigPath,
      kubeConfig,
      server,
      host: HOST,
      port,
      etcdUrl,
      binDir: binaries.dir,
      binaries,
      dir,
      caCertPath: certs.ca.certPath,
      logDir,
      controllerManager: options.controllerManager === true,
      ...(auditLogPath ? { auditLogPath } : {}),
      timings,
      processIds: () => Object.fromEntries(processes.filter((p) => !p.exitStatus()).map((p) => [p.name, p.pid])),
      createUserKubeconfig: async (user, groups = []) => {
        const safe = user.replace(/[^a-zA-Z0-9.-]/g, '_');
        const pair = await issueCert(usersDir, certs.ca, { name: safe, commonName: user, organizations: groups, usage: 'client' });
        const path = join(usersDir, `${safe}.kubeconfig`);
        const kc = writeKubeconfig(path, { name: 'taskbatch-local', server, caPem, credentials: { kind: 'clientCert', certPem: readPem(pair.certPath), keyPem: readPem(pair.keyPath) } });
        return { path, kubeConfig: kc };
      },
      createServiceAccountKubeconfig: async (namespace, serviceAccount, expirationSeconds = 3600) => {
        let token: string | undefined;
        try {
          const tr = await kubeConfig.makeApiClient(CoreV1Api).createNamespacedServiceAccountToken({
            name: serviceAccount,
            namespace,
            body: { spec: { audiences: [], expirationSeconds } },
          });
          token = tr.status?.token;
        } catch (err) {
          throw new Error(`cannot get a token for ServiceAccount ${namespace}/${serviceAccount}: ${describeError(err)}`);
        }
        if (!token) throw new Error(`TokenRequest for ServiceAccount ${namespace}/${serviceAccount} returned no token`);
        const path = join(usersDir, `sa-${namespace}-${serviceAccount}.kubeconfig`);
        const kc = writeKubeconfig(path, { name: 'taskbatch-local', server, caPem, namespace, credentials: { kind: 'token', token } });
        return { path, kubeConfig: kc, token };
      },
      issueCertificate: (certDirFor, opts) => issueCert(certDirFor, certs.ca, opts),
      kubectl: runTool(binaries.kubectl, {}),
      helm: runTool(binaries.helm, {
        HELM_CACHE_HOME: join(dir, 'helm', 'cache'),
        HELM_CONFIG_HOME: join(dir, 'helm', 'config'),
        HELM_DATA_HOME: join(dir, 'helm', 'data'),
      }),
      stop,
    };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

async function makeCerts(certDir: string): Promise<Certs> {
  const ca = await createCA(certDir, 'ca', 'taskbatch-local-ca');
  const [serving, admin, kubeletClient, serviceAccount] = await Promise.all([
    issueCert(certDir, ca, {
      name: 'apiserver',
      commonName: 'kube-apiserver',
      usage: 'server',
      dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
      ips: [HOST, '10.0.0.1'],
    }),
    issueCert(certDir, ca, { name: 'admin', commonName: 'admin', organizations: ['system:masters'], usage: 'client' }),
    issueCert(certDir, ca, { name: 'apiserver-kubelet-client', commonName: 'kube-apiserver-kubelet-client', organizations: ['system:masters'], usage: 'client' }),
    createSigningKeyPair(certDir, 'sa'),
  ]);
  return { ca, serving, admin, kubeletClient, serviceAccount };
}

/** The environment of control-plane components: ours minus anything that points kubectl/client-go elsewhere. */
function baseEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.KUBECONFIG;
  return env;
}

async function retryOnPortClash<T>(name: string, start: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      const msg = describeError(err);
      if (attempt < 3 && /address already in use|bind: /i.test(msg)) continue;
      throw err instanceof Error ? err : new Error(`${name}: ${msg}`);
    }
  }
}

async function waitReady(name: string, proc: ManagedProcess, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  for (;;) {
    const status = proc.exitStatus();
    if (status) {
      throw new Error(`${name} exited during start-up (code ${status.code}, signal ${status.signal}); log ${proc.logFile}:\n${tailFile(proc.logFile)}`);
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = describeError(err);
    }
    if (Date.now() > deadline) {
      await proc.stop(2000);
      throw new Error(`${name} was not ready within ${timeoutMs} ms (last probe error: ${lastError || 'not ready'}); log ${proc.logFile}:\n${tailFile(proc.logFile)}`);
    }
    await sleep(150);
  }
}

async function waitFor(what: string, timeoutMs: number, probe: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(150);
  }
}

function httpsGet(url: string, certs: Certs | undefined): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      certs ? { ca: readFileSync(certs.ca.certPath), cert: readFileSync(certs.admin.certPath), key: readFileSync(certs.admin.keyPath), timeout: 5000 } : { rejectUnauthorized: false, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

export function runCommand(command: string, args: string[], o: ToolOptions & { env?: NodeJS.ProcessEnv } = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(command, args, { cwd: o.cwd, env: o.env, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      if (err && code === -1 && (err as { code?: unknown }).code === 'ENOENT') {
        reject(new Error(`cannot run ${command}: not found`));
        return;
      }
      resolve({ code, stdout, stderr });
    });
    if (o.input !== undefined) child.stdin?.end(o.input);
    else child.stdin?.end();
  });
}

interface ClusterRecord {
  pid: number;
  server: string;
  kubeconfig: string;
  binDir: string;
  startedAt: string;
}

/** Copies the kubeconfig to the well-known place hack/kubeconfig.sh reads. */
function record(kubeconfigPath: string, server: string, binDir: string): string {
  const stateDir = localClusterStateDir();
  mkdirSync(stateDir, { recursive: true });
  const target = join(stateDir, 'kubeconfig');
  copyFileSync(kubeconfigPath, target);
  const rec: ClusterRecord = { pid: process.pid, server, kubeconfig: target, binDir, startedAt: new Date().toISOString() };
  writeFileSync(join(stateDir, 'cluster.json'), JSON.stringify(rec, null, 2) + '\n');
  writeFileSync(join(stateDir, 'env'), `KUBECONFIG=${target}\nTASKBATCH_CONTROLPLANE_BIN=${binDir}\nTASKBATCH_LOCAL_CLUSTER_PID=${process.pid}\n`);
  return stateDir;
}

function removeRecord(stateDir: string): void {
  try {
    const rec = JSON.parse(readFileSync(join(stateDir, 'cluster.json'), 'utf8')) as ClusterRecord;
    if (rec.pid !== process.pid) return;
  } catch {
    return;
  }
  for (const f of ['kubeconfig', 'cluster.json', 'env']) {
    try {
      unlinkSync(join(stateDir, f));
    } catch {
      // already gone
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
