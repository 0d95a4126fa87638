import type { KubeObject } from '../../kube/client.js';
import { GROUP, VERSION } from '../../api/taskbatch.js';
import type { TaskScheduleSpec, TaskScheduleStatus } from './types.generated.js';

export type { TaskScheduleSpec, TaskScheduleStatus } from './types.generated.js';

export const SCHEDULE_KIND = 'TaskSchedule';
const SCHEDULE_PLURAL = 'taskschedules';
export const SCHEDULE_API_VERSION = `${GROUP}/${VERSION}`;

/** Label on the TaskBatches a schedule created, naming the schedule. */
export const SCHEDULE_LABEL = 'taskbatch.dev/schedule';
/** Annotation on those TaskBatches: the tick they were created for (RFC 3339). */
export const SCHEDULED_AT_ANNOTATION = 'taskbatch.dev/scheduled-at';

export interface TaskSchedule extends KubeObject {
  spec: TaskScheduleSpec;
  status?: TaskScheduleStatus;
}

export type ScheduleCondition = NonNullable<TaskScheduleStatus['conditions']>[number];

export function schedulePath(namespace: string, name?: string): string {
  const base = `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${SCHEDULE_PLURAL}`;
  return name ? `${base}/${name}` : base;
}

export const ALL_SCHEDULES_PATH = `/apis/${GROUP}/${VERSION}/${SCHEDULE_PLURAL}`;
