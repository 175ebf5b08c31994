// The node's event bus: cluster events (members joining, leaving, turning suspect or dead,
// leader changes, task transitions, alerts) for GET /api/events and the task event
// streams. Each subscriber has a bounded queue; one that falls too far behind is told so
// and closed, and reconnects, rather than making the node buffer without end.
import type { TaskStatusEvent } from '../protocol/tasks.ts';
import { logger } from './log.ts';

const log = logger('events');

export type ClusterEvent =
  | { type: 'node.joined' | 'node.alive' | 'node.suspect' | 'node.dead' | 'node.left'; at: number; nodeId: string; name: string | null }
  | { type: 'leader.changed'; at: number; leaderId: string | null; term: number }
  | { type: 'task.status'; at: number; event: TaskStatusEvent }
  | { type: 'alert'; at: number; kind: string; message: string }
  | { type: 'overflow'; at: number; message: string };

export const subscriberQueueMax = 2_000;
export const subscribersMax = 1_000;

interface Subscriber {
  queue: ClusterEvent[];
  wake: (() => void) | null;
  closed: boolean;
  filter: (event: ClusterEvent) => boolean;
}

export class EventBus {
  private readonly subscribers = new Set<Subscriber>();
  private readonly listeners = new Set<(event: ClusterEvent) => void>();

  get subscriberCount(): number {
    return this.subscribers.size;
  }

  /**
   * For this node's own bookkeeping (metrics): `handler` runs synchronously for every event
   * published from now on, with no queue. It must be quick; what it throws is logged, and
   * the event still reaches everyone else. Returns the function that removes it.
   */
  listen(handler: (event: ClusterEvent) => void): () => void {
    this.listeners.add(handler);
    return () => this.listeners.delete(handler);
  }

  publish(event: ClusterEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (error) {
        log.error('an event listener failed', { type: event.type, error: error as Error });
      }
    }
    for (const subscriber of this.subscribers) {
      if (subscriber.closed || !subscriber.filter(event)) continue;
      if (subscriber.queue.length >= subscriberQueueMax) {
        subscriber.queue.length = 0;
        subscriber.queue.push({ type: 'overflow', at: event.at, message: `this stream fell over ${subscriberQueueMax} events behind and was closed; reconnect` });
        subscriber.closed = true;
      } else {
        subscriber.queue.push(event);
      }
      subscriber.wake?.();
    }
  }

  /** True when no more streams may subscribe (subscribersMax): answer 429 before starting one. */
  get full(): boolean {
    return this.subscribers.size >= subscribersMax;
  }

  /** Events from now on, until the signal aborts (or the subscriber overflows). */
  async *subscribe(signal: AbortSignal, filter: (event: ClusterEvent) => boolean = () => true): AsyncGenerator<ClusterEvent> {
    if (this.subscribers.size >= subscribersMax) throw new Error(`over ${subscribersMax} event streams are open on this node`);
    const subscriber: Subscriber = { queue: [], wake: null, closed: false, filter };
    this.subscribers.add(subscriber);
    const onAbort = () => subscriber.wake?.();
    signal.addEventListener('abort', onAbort);
    try {
      while (!signal.aborted) {
        if (subscriber.queue.length === 0) {
          if (subscriber.closed) return;
          await new Promise<void>((resolve) => { subscriber.wake = resolve; });
          subscriber.wake = null;
          continue;
        }
        const event = subscriber.queue.shift()!;
        yield event;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
      this.subscribers.delete(subscriber);
    }
  }
}
