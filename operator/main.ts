#!/usr/bin/env node
import { KubeConfig } from '@kubernetes/client-node';
import { ConfigError, loadConfig } from './config.js';
import { Controller, startHttpServer } from './controller.js';
import { KubeClient } from './kube/client.js';
import { LeaderElector } from './leader.js';
import { createLogger } from './log.js';

const log = createLogger({ component: 'taskbatch-operator' });

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
  const kube = new KubeClient(kc);
  const controller = new Controller(kube, config, log);
  const server = await startHttpServer(config.metricsHost, config.metricsPort, controller.metrics, () => controller.synced || !leader?.isLeader);
  log.info('Serving metrics and health', { address: `${config.metricsHost}:${config.metricsPort}` });

  let leader: LeaderElector | undefined;
  let stopping = false;
  const shutdown = async (code: number): Promise<void> => {
    if (stopping) process.exit(code);
    stopping = true;
    log.info('Shutting down');
    await leader?.stop();
    await controller.stop();
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
  leader = new LeaderElector(kube, { namespace: config.leaseNamespace, name: config.leaseName, ...(process.env.POD_NAME ? { identity: process.env.POD_NAME } : {}) }, log, {
    onStartedLeading: () => {
      controller.metrics.isLeader.set(1);
      void controller.start().catch((err: unknown) => {
        log.error('Controller failed to start', { error: String(err) });
        void shutdown(1);
      });
    },
    // A replica that lost the lease must stop writing at once; exiting is the surest way
    // (the Deployment restarts it as a follower).
    onStoppedLeading: () => {
      controller.metrics.isLeader.set(0);
      log.error('Leadership lost; exiting so that only the leader writes');
      void shutdown(1);
    },
  });
  leader.start();
}

main().catch((err: unknown) => {
  log.error('Operator crashed', { error: String((err as Error).stack ?? err) });
  process.exit(1);
});
