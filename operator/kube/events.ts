import type { KubeClient, KubeObject } from '../../kube/client.js';
import type { Logger } from '../log.js';

export type EventType = 'Normal' | 'Warning';

/**
 * Emits core/v1 Events about an object (what `kubectl describe` shows). The same reason and
 * message for the same object within a minute is emitted once, so a hot loop cannot flood.
 */
export class EventRecorder {
  private readonly recent = new Map<string, number>();

  constructor(
    private readonly kube: KubeClient,
    private readonly component: string,
    private readonly log: Logger,
  ) {}

  async emit(obj: KubeObject & { apiVersion?: string; kind?: string }, type: EventType, reason: string, message: string): Promise<void> {
    const ns = obj.metadata.namespace ?? 'default';
    const dedupe = `${obj.metadata.uid}|${reason}|${message}`;
    const now = Date.now();
    if ((this.recent.get(dedupe) ?? 0) > now - 60_000) return;
    this.recent.set(dedupe, now);
    if (this.recent.size > 10_000) this.recent.clear();
    const ts = new Date(now).toISOString();
    try {
      await this.kube.create(`/api/v1/namespaces/${ns}/events`, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${obj.metadata.name}.`, namespace: ns },
        involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.metadata.name, namespace: ns, uid: obj.metadata.uid, resourceVersion: obj.metadata.resourceVersion },
        reason,
        message: message.slice(0, 1024),
        type,
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: process.env.POD_NAME ?? this.component,
        firstTimestamp: ts,
        lastTimestamp: ts,
        count: 1,
      });
    } catch (err) {
      this.log.warn('Failed to emit an event', { reason, object: `${ns}/${obj.metadata.name}`, error: String(err) });
    }
  }
}
