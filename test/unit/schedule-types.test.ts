// operator/schedule/types.generated.ts is generated from crds/taskbatch.dev_taskschedules.yaml
// (the one source of truth) with hack/gen-types.ts's generator. Regenerate it with
//   UPDATE_SCHEDULE_TYPES=1 node --experimental-vm-modules node_modules/jest/bin/jest.js --selectProjects unit --testPathPatterns schedule-types
// (The generator lives here, not in operator/, so the operator image needs nothing from hack/.)
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateTypes } from '../../hack/gen-types.js';
import { repoRoot } from '../../localcluster/index.js';

const CRD = join(repoRoot(), 'crds/taskbatch.dev_taskschedules.yaml');
const TYPES = join(repoRoot(), 'operator/schedule/types.generated.ts');

function generateScheduleTypes(crdYaml: string): string {
  return generateTypes(crdYaml)
    .replace('crds/taskbatch.dev_taskbatches.yaml by hack/gen-types.ts', 'crds/taskbatch.dev_taskschedules.yaml by test/unit/schedule-types.test.ts')
    .replace('export type TaskBatchSpec =', 'export type TaskScheduleSpec =')
    .replace('export type TaskBatchStatus =', 'export type TaskScheduleStatus =');
}

test('operator/schedule/types.generated.ts is generated from the TaskSchedule CRD', () => {
  const fresh = generateScheduleTypes(readFileSync(CRD, 'utf8'));
  if (process.env.UPDATE_SCHEDULE_TYPES === '1') writeFileSync(TYPES, fresh);
  expect(readFileSync(TYPES, 'utf8')).toBe(fresh);
});
