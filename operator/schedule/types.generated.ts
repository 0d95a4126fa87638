// Generated from crds/taskbatch.dev_taskschedules.yaml by test/unit/schedule-types.test.ts. Do not edit.
// API version: taskbatch.dev/v1alpha1

export type TaskScheduleSpec = {
  /** Cron: 5 fields (minute hour day-of-month month day-of-week), or 6 with a leading seconds field; @yearly, @monthly, @weekly, @daily, @hourly. Names (jan, mon) and 7 = Sunday accepted. */
  schedule: string;
  /** IANA time zone of the schedule (e.g. Europe/Berlin). Unset: UTC. */
  timeZone?: string;
  /** Allow: runs may overlap; Forbid: while a run is active a tick waits and starts late, when the run finishes (within startingDeadlineSeconds; only the most recent tick), as CronJob does; Replace: delete the active runs, then start the new one */
  concurrencyPolicy?: "Allow" | "Forbid" | "Replace";
  /** A tick missed by more than this (operator down, or waiting under Forbid) is not started late. Unset = no deadline. */
  startingDeadlineSeconds?: number;
  /** true stops creating runs (runs already started go on). */
  suspend?: boolean;
  /** Finished successful runs (Complete TaskBatches) to keep; older ones are deleted. */
  successfulRunsHistoryLimit?: number;
  /** Failed runs to keep; older ones are deleted. */
  failedRunsHistoryLimit?: number;
  /** The TaskBatch each tick creates. Its spec is validated by the TaskBatch API (a dry-run create reports problems in the Ready condition). */
  batchTemplate: {
    metadata?: {
      labels?: Record<string, string>;
      annotations?: Record<string, string>;
    };
    /** A TaskBatch spec (see the TaskBatch CRD). */
    spec: Record<string, unknown>;
  };
};

export type TaskScheduleStatus = {
  observedGeneration?: number;
  /** The tick of the most recent run created */
  lastScheduleTime?: string;
  /** When the most recent successful run completed */
  lastSuccessfulTime?: string;
  /** The next tick (unset when suspended or invalid) */
  nextScheduleTime?: string;
  /** A tick waiting for the active run to finish (concurrencyPolicy Forbid); it starts then, within startingDeadlineSeconds */
  waitingScheduleTime?: string;
  /** Runs still going (for display) */
  activeCount?: number;
  /** The runs still going (TaskBatches without a Complete or Failed condition), oldest first. */
  active?: {
    name: string;
    uid?: string;
    scheduledTime?: string;
  }[];
  conditions?: ({
    type: string;
    status: "True" | "False" | "Unknown";
    reason: string;
    message?: string;
    lastTransitionTime: string;
    observedGeneration?: number;
  })[];
};

/** The CRD's defaults of scalar spec fields, by path (see hack/gen-types.ts). */
export const SPEC_DEFAULTS = {
  "concurrencyPolicy": "Allow",
  "suspend": false,
  "successfulRunsHistoryLimit": 3,
  "failedRunsHistoryLimit": 1,
} as const;
