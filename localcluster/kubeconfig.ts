/** Kubeconfig files for the local cluster: admin (client cert), restricted users, service accounts (token). */
import { KubeConfig } from '@kubernetes/client-node';
import { writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

export type KubeconfigCredentials =
  | { kind: 'clientCert'; certPem: string; keyPem: string }
  /**
   * A bearer token. With `file`, the kubeconfig also names the file holding it (`tokenFile`), which
   * client-go (kubectl) re-reads as it is rotated; @kubernetes/client-node uses the inline token.
   */
  | { kind: 'token'; token: string; file?: string };

export interface KubeconfigSpec {
  /** Names the cluster, user and context. */
  name: string;
  server: string;
  caPem: string;
  credentials: KubeconfigCredentials;
  namespace?: string;
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

function kubeconfigYaml(spec: KubeconfigSpec): string {
  const c = spec.credentials;
  const user = c.kind === 'clientCert' ? { 'client-certificate-data': b64(c.certPem), 'client-key-data': b64(c.keyPem) } : { token: c.token, ...(c.file ? { tokenFile: c.file } : {}) };
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: spec.name, cluster: { server: spec.server, 'certificate-authority-data': b64(spec.caPem) } }],
    users: [{ name: spec.name, user }],
    contexts: [{ name: spec.name, context: { cluster: spec.name, user: spec.name, ...(spec.namespace ? { namespace: spec.namespace } : {}) } }],
    'current-context': spec.name,
    preferences: {},
  });
}

/** Writes a kubeconfig (mode 0600) and returns it loaded. */
export function writeKubeconfig(path: string, spec: KubeconfigSpec): KubeConfig {
  const text = kubeconfigYaml(spec);
  writeFileSync(path, text, { mode: 0o600 });
  const kc = new KubeConfig();
  kc.loadFromString(text);
  return kc;
}
