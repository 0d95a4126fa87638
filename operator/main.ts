#!/usr/bin/env node
import { KubeConfig } from '@kubernetes/client-node';
import { ConfigError, loadConfig } from './config.js';
import { Controller, startHttpServer } from './controller.js';
import { KubeClient } from '../kube/client.js';
import { LEASE_DURATION_MS, LEASE_REQUEST_TIMEOUT_MS, LeaderElector, RENEW_DEADLINE_MS } from './leader.js';
import { createLogger } from './log.js';

const log = createLogger({ component: 'taskbatch-operator' });

/**
 * On shutdown, reconciles in flight get this long to finish before leadership is given up:
 * below the renew deadline, so the drain ends while the lease is still ours even if the API
 * server stops answering renewals meanwhile.
 */
const DRAIN_MS = RENEW_DEADLINE_MS - 3_000;
/**
 * With leader election, a write allowed just before the renew deadline must be answered (or
 * abandoned) before any other replica can take over: leaseDuration - renewDeadline = 5 s.
 */
const WRITE_TIMEOUT_MS = LEASE_DURATION_MS - RENEW_DEADLINE_MS;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      log.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const kube = new KubeClient(kc, config.leaderElection ? { writeTimeoutMs: WRITE_TIMEOUT_MS } : {});
  const controller = new Controller(kube, config, log);
  const server = await startHttpServer(config.metricsHost, config.metricsPort, controller.metrics, () => controller.synced || !leader?.isLeader);
  log.info('Serving metrics and health', { address: `${config.metricsHost}:${config.metricsPort}` });

  let leader: LeaderElector | undefined;
  let stopping = false;
  // Order matters: stop reconciling (in-flight reconciles get DRAIN_MS, the lease is still
  // held and renewed meanwhile), then close the write fence, wait for writes already sent,
  // and only then release the Lease. Releasing first would let the next leader start while
  // this one still writes.
  const shutdown = async (code: number, drainMs = DRAIN_MS): Promise<void> => {
    if (stopping) process.exit(code);
    stopping = true;
    log.info('Shutting down', { drainMs });
    const drained = await controller.stop(drainMs);
    if (!drained) log.warn('Reconciles still running after the drain deadline; their writes are refused from now on', { drainMs });
    await leader?.stop(() => kube.writesSettled());
    server.close();
    process.exit(code);
  };
  process.on('SIGTERM', () => void shutdown(0));
  process.on('SIGINT', () => void shutdown(0));

  if (!config.leaderElection) {
    controller.metrics.isLeader.set(1);
    await controller.start();
    return;
  }
  // The elector's own client: no write guard (its Lease writes must pass while the operator's
  // are fenced) and requests bounded well below the renew deadline.
  const leases = new KubeClient(kc, { requestTimeoutMs: LEASE_REQUEST_TIMEOUT_MS });
  const elector = new LeaderElector(leases, { namespace: config.leaseNamespace, name: config.leaseName, ...(process.env.POD_NAME ? { identity: process.env.POD_NAME } : {}) }, log, {
    onStartedLeading: () => {
      // Won during shutdown: do not start; stop() releases the lease again.
      if (stopping) return;
      controller.metrics.isLeader.set(1);
      void controller.start().catch((err: unknown) => {
        log.error('Controller failed to start', { error: String(err) });
        void shutdown(1);
      });
    },
    // API writes are already fenced (isLeader turned false); no drain, so the Redis clients
    // close at once and in-flight reconciles stop seeding too. The Deployment restarts the
    // replica as a follower.
    onStoppedLeading: () => {
      controller.metrics.isLeader.set(0);
      log.error('Leadership lost; exiting so that only the leader writes');
      void shutdown(1, 0);
    },
  });
  leader = elector;
  // Every write of the controller (reconciles, events, schedules) passes here; a reconcile
  // that outlives leadership fails its next write with NotLeaderError.
  kube.setWriteGuard(() => elector.isLeader);
  elector.start();
}

main().catch((err: unknown) => {
  log.error('Operator crashed', { error: String((err as Error).stack ?? err) });
  process.exit(1);
});
