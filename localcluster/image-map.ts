/**
 * Container images → local programs. There are no image pulls here: a container runs as a local
 * process. A rule matching the image can rewrite paths (the image's /app/ is the repository
 * root), replace executables by name (node → the Node binary running the agent), and supply the
 * image's ENTRYPOINT/CMD/WORKDIR/ENV. Containers whose image matches no rule run their command
 * as is when the executable exists on this machine; otherwise the container fails to start.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

export interface ImageRule {
  /** Glob on the full image reference (`*` matches any run of characters) or a RegExp. */
  image: string | RegExp;
  /** Path prefixes rewritten in the command, args and workingDir, e.g. {'/app/': '/home/me/taskbatch/'}. */
  paths?: Record<string, string>;
  /** Executables replaced by name (after path rewriting), e.g. {node: process.execPath}. */
  commands?: Record<string, string>;
  /** The image's ENTRYPOINT, used when the container sets no command. */
  entrypoint?: string[];
  /** The image's CMD, used when the container sets neither command nor args. */
  cmd?: string[];
  /** The image's WORKDIR (paths are rewritten), used when the container sets no workingDir. */
  workingDir?: string;
  /** The image's ENV (the pod's env overrides it). */
  env?: Record<string, string>;
  /**
   * The image's init (e.g. `tini`): a command that starts with it runs what follows its `--`
   * directly. A container here is a child of the agent, not PID 1 of a PID namespace, so an init
   * would have nothing to reap, and the image's init is not installed on this machine.
   */
  init?: string;
}

/**
 * The default map: images named like *taskbatch*operator* and *taskbatch*worker* run this
 * repository's compiled JS (/app/ → repository root, `node` → the agent's Node binary).
 */
export function defaultImageMap(repoRoot: string, nodePath: string = process.execPath): ImageRule[] {
  const paths = { '/app/': `${repoRoot.replace(/\/$/, '')}/`, '/app': repoRoot.replace(/\/$/, '') };
  const commands = { node: nodePath };
  return [
    { image: '*taskbatch*operator*', paths, commands, entrypoint: ['node', '/app/dist/operator/main.js'], workingDir: '/app' },
    { image: '*taskbatch*worker*', paths, commands, init: 'tini', entrypoint: ['tini', '--', 'node', '/app/dist/worker/main.js'], workingDir: '/app' },
  ];
}

export interface ContainerCommandSpec {
  image?: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
}

export type ResolvedCommand =
  | { ok: true; executable: string; args: string[]; workingDir?: string; imageEnv: Record<string, string>; rule?: ImageRule }
  | { ok: false; reason: string; message: string };

function globToRegExp(glob: string): RegExp {
  return new RegExp(
    `^${glob
      .split('*')
      .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('.*')}$`,
  );
}

function findImageRule(image: string, rules: readonly ImageRule[]): ImageRule | undefined {
  return rules.find((r) => (typeof r.image === 'string' ? globToRegExp(r.image) : r.image).test(image));
}

function rewritePath(value: string, paths: Record<string, string>): string {
  // Longest prefix first, so '/app/' wins over '/app'.
  const prefixes = Object.keys(paths).sort((a, b) => b.length - a.length);
  for (const p of prefixes) {
    const to = paths[p] ?? p;
    if (value === p || (value.startsWith(p) && (p.endsWith('/') || value[p.length] === '/'))) return to + value.slice(p.length);
    const eq = value.indexOf(`=${p}`);
    if (eq >= 0) {
      const after = value.slice(eq + 1);
      if (after === p || (after.startsWith(p) && (p.endsWith('/') || after[p.length] === '/'))) return value.slice(0, eq + 1) + to + after.slice(p.length);
    }
  }
  return value;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Finds an executable on a PATH string; undefined when absent. */
function which(name: string, pathEnv: string): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? name : undefined;
  for (const dir of pathEnv.split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    if (isExecutable(p)) return p;
  }
  return undefined;
}

/** argv without a leading init and its options (up to the first non-option, or `--`). */
function withoutInit(argv: string[], init: string | undefined): string[] {
  if (!init || argv[0] !== init) return argv;
  let first = 1;
  while (first < argv.length && argv[first]!.startsWith('-')) {
    if (argv[first++] === '--') break;
  }
  return argv.slice(first);
}

/**
 * What to execute for a container, Docker's way: the container's command replaces the image's
 * ENTRYPOINT (and drops its CMD); its args replace the CMD.
 */
export function resolveContainerCommand(spec: ContainerCommandSpec, rules: readonly ImageRule[], pathEnv: string): ResolvedCommand {
  const image = spec.image ?? '';
  const rule = findImageRule(image, rules);
  const entry = spec.command && spec.command.length > 0 ? spec.command : (rule?.entrypoint ?? []);
  const rest = spec.args ?? (spec.command && spec.command.length > 0 ? [] : (rule?.cmd ?? []));
  const argv = [...entry, ...rest];
  if (argv.length === 0) {
    return {
      ok: false,
      reason: 'StartError',
      message: `container of image ${image} has no command and the node agent's image map has no entrypoint for that image`,
    };
  }
  const paths = rule?.paths ?? {};
  const mapped = withoutInit(
    argv.map((a) => rewritePath(a, paths)),
    rule?.init,
  );
  const exeName = mapped[0] ?? '';
  const replaced = rule?.commands?.[exeName] ?? exeName;
  const executable = which(replaced, pathEnv);
  if (!executable) {
    return {
      ok: false,
      reason: 'StartError',
      message: rule
        ? `executable ${JSON.stringify(replaced)} of image ${image} not found on this machine`
        : `executable ${JSON.stringify(exeName)} not found on this machine, and image ${image} has no rule in the node agent's image map (no image pulls here)`,
    };
  }
  const wd = spec.workingDir ?? rule?.workingDir;
  const workingDir = wd !== undefined ? rewritePath(wd, paths) : undefined;
  return {
    ok: true,
    executable,
    args: mapped.slice(1),
    ...(workingDir !== undefined ? { workingDir } : {}),
    imageEnv: { ...(rule?.env ?? {}) },
    ...(rule ? { rule } : {}),
  };
}
