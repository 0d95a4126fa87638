/** The OCI image archives hack/build-images.sh leaves in its output directory. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Every `*.oci.tar` in `dir`, pause first (containerd needs the sandbox image before any pod). */
export function imageArchives(dir: string): string[] {
  const files = readdirSync(dir)
    .filter((f) => f.endsWith('.oci.tar'))
    .sort();
  if (files.length === 0) throw new Error(`no image archives (*.oci.tar) in ${dir}; build them with hack/build-images.sh`);
  return files.sort((a, b) => Number(!a.startsWith('pause')) - Number(!b.startsWith('pause'))).map((f) => join(dir, f));
}
