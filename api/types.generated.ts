// Generated from crds/taskbatch.dev_taskbatches.yaml by hack/gen-types.ts. Do not edit.
// API version: taskbatch.dev/v1alpha1

export type TaskBatchSpec = {
  /** Inline items (JSON objects), at most 1000. For more, use spec.itemsFrom (a ConfigMap of JSON Lines) or spec.open with the SDK/CLI. */
  items?: Record<string, unknown>[];
  /** Generated items {"i": n} for n from start (inclusive) to end (exclusive) by step. */
  range?: {
    start?: number;
    end: number;
    step?: number;
  };
  /** Items as JSON Lines (one JSON value per line) in a ConfigMap key, in the TaskBatch's namespace. */
  itemsFrom?: {
    configMapKeyRef: {
      name: string;
      key: string;
    };
  };
  /** true makes a long-lived queue that producers add items to (SDK, CLI); it completes only after it is closed and drained. */
  open?: boolean;
  /** The function that runs each item: a user module (path in the worker image, or package) and export, or a built-in. */
  handler: {
    /** Path (absolute, in the worker image) or package name of an ESM or CommonJS module */
    module?: string;
    /** Name of the exported function (default: default) */
    export?: string;
    builtin?: "noop" | "sleep" | "shell" | "primes";
    /** fn: each item names the export to call, {fn: NAME, args: [...]} (remote calls to a module of several functions) */
    dispatch?: "fn";
    /** For builtin shell: argv, each element templated from the item ({{item}}, {{item.field}}, {{id}}, {{attempt}}) into exactly one argument; never run through a shell. An argument that item data would start with '-' fails the item unless it comes after a literal '--' element; command[0] cannot be templated (docs/worker.md) */
    command?: string[];
    /** For builtin shell: working directory */
    cwd?: string;
    /** For builtin shell: extra environment variables (values templated like arguments) */
    env?: Record<string, string>;
    /** For builtin shell: json writes the item to the command's stdin */
    stdin?: "json" | "none";
    /** For builtin shell: stdout kept as the result */
    maxOutputBytes?: number;
  };
  /** The local pool each worker pod runs items in. */
  pool?: {
    /** thread: worker_threads (CPU-bound JS); process: child processes (strongest isolation); async: concurrent promises (I/O-bound) */
    mode?: "thread" | "process" | "async";
    /** Executors per worker pod: at most 256 for thread and process (1024 for async), and at most what the worker container's memory limit holds (the operator refuses more with ResourcesRejected) */
    size?: number;
    /** Replace a thread/process after this many items */
    maxItemsPerExecutor?: number;
    /** Replace a thread/process whose memory exceeds this */
    maxMemoryMiB?: number;
  };
  /** How many worker pods. scaling: Backlog (the default) lets the operator size the pool from the backlog, between min and max; scaling: Replicas runs exactly replicas pods, a count you, kubectl scale, an HPA or KEDA set (the /scale subresource). max caps both. */
  workers?: {
    /** Backlog: the operator scales between min and max from the backlog (replicas stays 0). Replicas: exactly replicas worker pods (0 = none), set by you, kubectl scale, an HPA or KEDA through /scale */
    scaling?: "Backlog" | "Replicas";
    /** Fewest worker pods under Backlog scaling */
    min?: number;
    /** Most worker pods, however the batch is scaled */
    max?: number;
    /** Backlog per worker pod the autoscaler aims for */
    itemsPerWorker?: number;
    /** The worker count under scaling: Replicas, at most max (the /scale subresource's spec.replicas). Always present so that GET /scale answers; stays 0 under Backlog scaling */
    replicas?: number;
    /** Stabilization window before scaling in */
    scaleDownDelaySeconds?: number;
  };
  retry?: {
    /** Attempts per item, the first included */
    maxAttempts?: number;
    backoff?: {
      initialMs?: number;
      factor?: number;
      maxMs?: number;
      jitter?: number;
    };
  };
  /** When permanently failed items make the batch Failed instead of Complete. Unset: any failed item fails the batch (as a Job does). */
  failurePolicy?: {
    maxFailedItems?: number;
    maxFailedPercent?: number;
  };
  itemTimeoutSeconds?: number;
  /** Lease a worker holds on an item; renewed while it runs. A dead worker's items are retried after at most this long. */
  leaseSeconds?: number;
  activeDeadlineSeconds?: number;
  ttlSecondsAfterFinished?: number;
  /** Job semantics: no worker pods while true; nothing is lost; resumes when false */
  suspend?: boolean;
  /** Pod template of the worker pods (a PodTemplateSpec). The operator fills in the worker container's command and env; the container named "worker" (or the first) is the worker. The operator's workerPodSecurity level (default restricted) is enforced on it; a template contradicting it fails the batch (PodTemplateRejected). */
  template?: {
    metadata?: Record<string, unknown>;
    /** A core/v1 PodSpec. The fields below are structural (a misspelt field in them is refused); the rest of PodSpec (affinity, tolerations, nodeSelector, ...) is kept as given, unvalidated until the pod is created. */
    spec?: {
      /** The containers; the one named worker (or the first) runs the worker, the others are sidecars. Structural, so that a misspelt field is refused instead of silently reaching (or missing) the pod; probes and lifecycle stay free-form. */
      containers?: ({
        name: string;
        image?: string;
        imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
        command?: string[];
        args?: string[];
        workingDir?: string;
        env?: {
          name: string;
          value?: string;
          valueFrom?: Record<string, unknown>;
        }[];
        envFrom?: Record<string, unknown>[];
        ports?: ({
          name?: string;
          containerPort: number;
          hostPort?: number;
          hostIP?: string;
          protocol?: "TCP" | "UDP" | "SCTP";
        })[];
        resources?: {
          limits?: Record<string, unknown>;
          requests?: Record<string, unknown>;
          claims?: Record<string, unknown>[];
        };
        resizePolicy?: Record<string, unknown>[];
        /** Always on an init container makes it a native sidecar */
        restartPolicy?: string;
        restartPolicyRules?: Record<string, unknown>[];
        volumeMounts?: {
          name: string;
          mountPath: string;
          readOnly?: boolean;
          recursiveReadOnly?: string;
          subPath?: string;
          subPathExpr?: string;
          mountPropagation?: string;
        }[];
        volumeDevices?: Record<string, unknown>[];
        livenessProbe?: Record<string, unknown>;
        readinessProbe?: Record<string, unknown>;
        startupProbe?: Record<string, unknown>;
        lifecycle?: Record<string, unknown>;
        terminationMessagePath?: string;
        terminationMessagePolicy?: string;
        stdin?: boolean;
        stdinOnce?: boolean;
        tty?: boolean;
        /** The container's security context (the fields of a core/v1 SecurityContext). Enforced by the operator's workerPodSecurity level. */
        securityContext?: {
          allowPrivilegeEscalation?: boolean;
          appArmorProfile?: {
            type: "RuntimeDefault" | "Localhost" | "Unconfined";
            localhostProfile?: string;
          };
          capabilities?: {
            add?: string[];
            drop?: string[];
          };
          privileged?: boolean;
          procMount?: "Default" | "Unmasked";
          readOnlyRootFilesystem?: boolean;
          runAsGroup?: number;
          runAsNonRoot?: boolean;
          runAsUser?: number;
          seLinuxOptions?: {
            level?: string;
            role?: string;
            type?: string;
            user?: string;
          };
          seccompProfile?: {
            type: "RuntimeDefault" | "Localhost" | "Unconfined";
            localhostProfile?: string;
          };
          windowsOptions?: {
            gmsaCredentialSpec?: string;
            gmsaCredentialSpecName?: string;
            hostProcess?: boolean;
            runAsUserName?: string;
          };
        };
      })[];
      /** Init containers (restartPolicy Always makes one a native sidecar). Structural, so that a misspelt field is refused instead of silently reaching (or missing) the pod; probes and lifecycle stay free-form. */
      initContainers?: ({
        name: string;
        image?: string;
        imagePullPolicy?: "Always" | "IfNotPresent" | "Never";
        command?: string[];
        args?: string[];
        workingDir?: string;
        env?: {
          name: string;
          value?: string;
          valueFrom?: Record<string, unknown>;
        }[];
        envFrom?: Record<string, unknown>[];
        ports?: ({
          name?: string;
          containerPort: number;
          hostPort?: number;
          hostIP?: string;
          protocol?: "TCP" | "UDP" | "SCTP";
        })[];
        resources?: {
          limits?: Record<string, unknown>;
          requests?: Record<string, unknown>;
          claims?: Record<string, unknown>[];
        };
        resizePolicy?: Record<string, unknown>[];
        /** Always on an init container makes it a native sidecar */
        restartPolicy?: string;
        restartPolicyRules?: Record<string, unknown>[];
        volumeMounts?: {
          name: string;
          mountPath: string;
          readOnly?: boolean;
          recursiveReadOnly?: string;
          subPath?: string;
          subPathExpr?: string;
          mountPropagation?: string;
        }[];
        volumeDevices?: Record<string, unknown>[];
        livenessProbe?: Record<string, unknown>;
        readinessProbe?: Record<string, unknown>;
        startupProbe?: Record<string, unknown>;
        lifecycle?: Record<string, unknown>;
        terminationMessagePath?: string;
        terminationMessagePolicy?: string;
        stdin?: boolean;
        stdinOnce?: boolean;
        tty?: boolean;
        /** The container's security context (the fields of a core/v1 SecurityContext). Enforced by the operator's workerPodSecurity level. */
        securityContext?: {
          allowPrivilegeEscalation?: boolean;
          appArmorProfile?: {
            type: "RuntimeDefault" | "Localhost" | "Unconfined";
            localhostProfile?: string;
          };
          capabilities?: {
            add?: string[];
            drop?: string[];
          };
          privileged?: boolean;
          procMount?: "Default" | "Unmasked";
          readOnlyRootFilesystem?: boolean;
          runAsGroup?: number;
          runAsNonRoot?: boolean;
          runAsUser?: number;
          seLinuxOptions?: {
            level?: string;
            role?: string;
            type?: string;
            user?: string;
          };
          seccompProfile?: {
            type: "RuntimeDefault" | "Localhost" | "Unconfined";
            localhostProfile?: string;
          };
          windowsOptions?: {
            gmsaCredentialSpec?: string;
            gmsaCredentialSpecName?: string;
            hostProcess?: boolean;
            runAsUserName?: string;
          };
        };
      })[];
      /** The pod's security context (the fields of a core/v1 PodSecurityContext). Enforced by the operator's workerPodSecurity level. */
      securityContext?: {
        appArmorProfile?: {
          type: "RuntimeDefault" | "Localhost" | "Unconfined";
          localhostProfile?: string;
        };
        fsGroup?: number;
        fsGroupChangePolicy?: string;
        runAsGroup?: number;
        runAsNonRoot?: boolean;
        runAsUser?: number;
        seLinuxChangePolicy?: string;
        seLinuxOptions?: {
          level?: string;
          role?: string;
          type?: string;
          user?: string;
        };
        seccompProfile?: {
          type: "RuntimeDefault" | "Localhost" | "Unconfined";
          localhostProfile?: string;
        };
        supplementalGroups?: number[];
        supplementalGroupsPolicy?: string;
        sysctls?: {
          name: string;
          value: string;
        }[];
        windowsOptions?: {
          gmsaCredentialSpec?: string;
          gmsaCredentialSpecName?: string;
          hostProcess?: boolean;
          runAsUserName?: string;
        };
      };
      hostNetwork?: boolean;
      hostPID?: boolean;
      hostIPC?: boolean;
      /** The pod's volumes. Each names its source (hostPath, emptyDir, configMap, ...); a misspelt source is refused. The sources' own fields are free-form. */
      volumes?: {
        name: string;
        awsElasticBlockStore?: Record<string, unknown>;
        azureDisk?: Record<string, unknown>;
        azureFile?: Record<string, unknown>;
        cephfs?: Record<string, unknown>;
        cinder?: Record<string, unknown>;
        configMap?: Record<string, unknown>;
        csi?: Record<string, unknown>;
        downwardAPI?: Record<string, unknown>;
        emptyDir?: Record<string, unknown>;
        ephemeral?: Record<string, unknown>;
        fc?: Record<string, unknown>;
        flexVolume?: Record<string, unknown>;
        flocker?: Record<string, unknown>;
        gcePersistentDisk?: Record<string, unknown>;
        gitRepo?: Record<string, unknown>;
        glusterfs?: Record<string, unknown>;
        hostPath?: Record<string, unknown>;
        image?: Record<string, unknown>;
        iscsi?: Record<string, unknown>;
        nfs?: Record<string, unknown>;
        persistentVolumeClaim?: Record<string, unknown>;
        photonPersistentDisk?: Record<string, unknown>;
        portworxVolume?: Record<string, unknown>;
        projected?: Record<string, unknown>;
        quobyte?: Record<string, unknown>;
        rbd?: Record<string, unknown>;
        scaleIO?: Record<string, unknown>;
        secret?: Record<string, unknown>;
        storageos?: Record<string, unknown>;
        vsphereVolume?: Record<string, unknown>;
      }[];
      serviceAccountName?: string;
      automountServiceAccountToken?: boolean;
      [key: string]: unknown;
    };
  };
  /** Where the batch's items live. Unset = the operator's default Redis. */
  redis?: {
    /** redis://host:port[/db] or rediss:// (TLS), without credentials */
    url?: string;
    /** ACL user name (the password comes from secretRef) */
    username?: string;
    secretRef?: {
      name: string;
      passwordKey?: string;
      /** Key holding the URL, when spec.redis.url is unset */
      urlKey?: string;
    };
    tls?: {
      enabled?: boolean;
      caSecretRef?: {
        name: string;
        key?: string;
      };
      insecureSkipVerify?: boolean;
    };
    /** The URL names a seed node of a Redis Cluster */
    cluster?: boolean;
    /** Find the primary through Redis Sentinel (instead of url); workers and the operator follow it across failovers */
    sentinel?: {
      /** Sentinels to ask, host:port ([IPv6]:port); each must be in the installer's allowed Redis addresses, and so must the primaries they name */
      addresses: string[];
      /** The primary's name in the sentinels' 'sentinel monitor <name> ...' */
      masterName: string;
      /** Key of the spec.redis.secretRef Secret holding the sentinels' own password, when they require AUTH */
      passwordKey?: string;
    };
    /** Database number, with sentinel (default 0); with url it is the URL's path */
    db?: number;
    /** local: a state change counts once the primary has it. replicated: each one also waits for a replica (WAIT 1), so a failover loses no acknowledged change */
    durability?: "local" | "replicated";
  };
};

export type TaskBatchStatus = {
  observedGeneration?: number;
  /** Summary of the conditions for display */
  state?: string;
  startTime?: string;
  completionTime?: string;
  /** Epoch of the batch's state in Redis, kept here to detect data loss */
  queueEpoch?: string;
  /** State changes of the batch's queue last seen in Redis (a count that only grows), kept here to detect Redis restored from an older snapshot */
  queueChanges?: number;
  /** The operator's default Redis this batch uses (when spec.redis is unset), without credentials, so clients (SDK, CLI) can find it */
  redis?: {
    url?: string;
    username?: string;
    tls?: boolean;
    cluster?: boolean;
  };
  seeded?: boolean;
  items?: {
    total?: number;
    pending?: number;
    delayed?: number;
    running?: number;
    succeeded?: number;
    failed?: number;
    retries?: number;
    /** items a stopping worker returned unstarted or unfinished to the queue; they ran again but are not failures */
    handedBack?: number;
  };
  progress?: string;
  workers?: {
    desired?: number;
    current?: number;
    ready?: number;
    draining?: number;
    /** Worker pods that failed since items last made progress */
    failures?: number;
    summary?: string;
  };
  selector?: string;
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
  "range.start": 0,
  "range.step": 1,
  "pool.mode": "thread",
  "pool.size": 4,
  "workers.scaling": "Backlog",
  "workers.min": 0,
  "workers.max": 10,
  "workers.itemsPerWorker": 100,
  "workers.replicas": 0,
  "workers.scaleDownDelaySeconds": 30,
  "retry.maxAttempts": 3,
  "retry.backoff.initialMs": 1000,
  "retry.backoff.factor": 2,
  "retry.backoff.maxMs": 60000,
  "retry.backoff.jitter": 0.2,
  "itemTimeoutSeconds": 600,
  "leaseSeconds": 30,
  "suspend": false,
  "redis.secretRef.passwordKey": "password",
  "redis.tls.enabled": false,
  "redis.tls.caSecretRef.key": "ca.crt",
  "redis.tls.insecureSkipVerify": false,
  "redis.cluster": false,
  "redis.durability": "local",
} as const;
