/**
 * Certificates for the local control plane, made with the openssl CLI: a throw-away CA, serving
 * and client certificates signed by it, and the service-account signing key pair.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertPair {
  certPath: string;
  keyPath: string;
}

export interface IssueOptions {
  /** File name stem: writes <dir>/<name>.crt and <name>.key. */
  name: string;
  commonName: string;
  organizations?: string[];
  usage: 'server' | 'client';
  dnsNames?: string[];
  ips?: string[];
  days?: number;
}

async function openssl(args: string[], what: string): Promise<void> {
  try {
    await run('openssl', args, { encoding: 'utf8' });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl failed to ${what}: ${e.stderr?.trim() || e.message}`);
  }
}

function subject(commonName: string, organizations: string[] = []): string {
  const esc = (s: string): string => s.replace(/[/\\]/g, (c) => `\\${c}`);
  return `/CN=${esc(commonName)}${organizations.map((o) => `/O=${esc(o)}`).join('')}`;
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export async function createCA(dir: string, name: string, commonName: string, days = 30): Promise<CertPair> {
  const pair = { certPath: join(dir, `${name}.crt`), keyPath: join(dir, `${name}.key`) };
  await openssl(
    [
      'req',
      '-x509',
      ...EC_KEY,
      '-keyout',
      pair.keyPath,
      '-out',
      pair.certPath,
      '-days',
      String(days),
      '-subj',
      subject(commonName),
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    ],
    `create CA ${commonName}`,
  );
  return pair;
}

export async function issueCert(dir: string, ca: CertPair, opts: IssueOptions): Promise<CertPair> {
  const pair = { certPath: join(dir, `${opts.name}.crt`), keyPath: join(dir, `${opts.name}.key`) };
  const csr = join(dir, `${opts.name}.csr`);
  const ext = join(dir, `${opts.name}.ext`);
  const sans = [...(opts.dnsNames ?? []).map((d) => `DNS:${d}`), ...(opts.ips ?? []).map((ip) => `IP:${ip}`)];
  writeFileSync(
    ext,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      `extendedKeyUsage=${opts.usage === 'server' ? 'serverAuth' : 'clientAuth'}`,
      ...(sans.length > 0 ? [`subjectAltName=${sans.join(',')}`] : []),
    ].join('\n') + '\n',
  );
  await openssl(['req', '-new', ...EC_KEY, '-keyout', pair.keyPath, '-out', csr, '-subj', subject(opts.commonName, opts.organizations)], `create a key for ${opts.commonName}`);
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      csr,
      '-CA',
      ca.certPath,
      '-CAkey',
      ca.keyPath,
      '-set_serial',
      `0x${randomBytes(12).toString('hex')}`,
      '-days',
      String(opts.days ?? 30),
      '-extfile',
      ext,
      '-out',
      pair.certPath,
    ],
    `sign a certificate for ${opts.commonName}`,
  );
  return pair;
}

export interface KeyPair {
  privateKeyPath: string;
  publicKeyPath: string;
}

/** An RSA key pair (RS256) for signing service-account tokens. */
export async function createSigningKeyPair(dir: string, name: string): Promise<KeyPair> {
  const pair = { privateKeyPath: join(dir, `${name}.key`), publicKeyPath: join(dir, `${name}.pub`) };
  await openssl(['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', pair.privateKeyPath], 'create the service-account key');
  await openssl(['pkey', '-in', pair.privateKeyPath, '-pubout', '-out', pair.publicKeyPath], 'derive the service-account public key');
  return pair;
}

export function readPem(path: string): string {
  return readFileSync(path, 'utf8');
}
