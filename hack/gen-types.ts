// Generates api/types.generated.ts from crds/taskbatch.dev_taskbatches.yaml, the
// one source of truth. `node dist/hack/gen-types.js` writes it; `--check` fails when the
// committed file is stale (the unit tests run the same comparison).
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

interface Schema {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  additionalProperties?: Schema;
  required?: string[];
  enum?: (string | number)[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  default?: unknown;
}

const root = fileURLToPath(new URL('../../', import.meta.url));
export const CRD_PATH = `${root}crds/taskbatch.dev_taskbatches.yaml`;
export const TYPES_PATH = `${root}api/types.generated.ts`;

function tsType(s: Schema, indent: string): string {
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'array':
      return `${wrap(tsType(s.items ?? {}, indent))}[]`;
    case 'object': {
      if (s.additionalProperties) return `Record<string, ${tsType(s.additionalProperties, indent)}>`;
      if (!s.properties) return s['x-kubernetes-preserve-unknown-fields'] ? 'Record<string, unknown>' : 'Record<string, never>';
      const inner = `${indent}  `;
      const lines = Object.entries(s.properties).map(([name, prop]) => {
        const doc = prop.description ? `${inner}/** ${prop.description.replace(/\*\//g, '*\\/')} */\n` : '';
        const optional = s.required?.includes(name) ? '' : '?';
        return `${doc}${inner}${name}${optional}: ${tsType(prop, inner)};`;
      });
      const extra = s['x-kubernetes-preserve-unknown-fields'] ? [`${inner}[key: string]: unknown;`] : [];
      return `{\n${[...lines, ...extra].join('\n')}\n${indent}}`;
    }
    default:
      return 'unknown';
  }
}

function wrap(t: string): string {
  return t.includes('|') ? `(${t})` : t;
}

/**
 * The CRD's defaults for scalar spec fields, by dotted path ("pool.size"): what the API server
 * fills in on create. Code that must assume a default (an object stored before a default was
 * added, `taskbatch run` reading a manifest without the API server) takes it from here, so the
 * CRD stays the one place a default is decided.
 */
function scalarDefaults(s: Schema, prefix: string, out: [string, unknown][]): [string, unknown][] {
  for (const [name, prop] of Object.entries(s.properties ?? {})) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (prop.type === 'object') scalarDefaults(prop, path, out);
    else if (prop.default !== undefined && prop.type !== 'array') out.push([path, prop.default]);
  }
  return out;
}

export function generateTypes(crdYaml: string): string {
  const crd = parse(crdYaml) as { spec: { versions: { name: string; schema: { openAPIV3Schema: Schema } }[] } };
  const version = crd.spec.versions[0]!;
  const schema = version.schema.openAPIV3Schema.properties!;
  return [
    '// Generated from crds/taskbatch.dev_taskbatches.yaml by hack/gen-types.ts. Do not edit.',
    `// API version: taskbatch.dev/${version.name}`,
    '',
    `export type TaskBatchSpec = ${tsType(schema.spec!, '')};`,
    '',
    `export type TaskBatchStatus = ${tsType(schema.status!, '')};`,
    '',
    "/** The CRD's defaults of scalar spec fields, by path (see hack/gen-types.ts). */",
    'export const SPEC_DEFAULTS = {',
    ...scalarDefaults(schema.spec!, '', []).map(([path, value]) => `  ${JSON.stringify(path)}: ${JSON.stringify(value)},`),
    '} as const;',
    '',
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fresh = generateTypes(readFileSync(CRD_PATH, 'utf8'));
  if (process.argv.includes('--check')) {
    if (readFileSync(TYPES_PATH, 'utf8') !== fresh) {
      console.error(`${TYPES_PATH} is stale: run node dist/hack/gen-types.js`);
      process.exit(1);
    }
  } else {
    writeFileSync(TYPES_PATH, fresh);
    console.log(`wrote ${TYPES_PATH}`);
  }
}
