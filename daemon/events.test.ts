// The event bus: listeners (this node's own bookkeeping) see every event at once; streams
// (SSE) see the events published after they subscribed, through their filter.
import { describe, expect, it } from 'vitest';
import { EventBus, type ClusterEvent } from './events.ts';

const alert = (n: number): ClusterEvent => ({ type: 'alert', at: n, kind: 'test', message: `alert ${n}` });

describe('EventBus', () => {
  it('calls listeners synchronously until removed, and does not count them as streams', () => {
    const bus = new EventBus();
    const seen: number[] = [];
    const stop = bus.listen((event) => seen.push(event.at));
    bus.publish(alert(1));
    expect(seen).toEqual([1]);
    expect(bus.subscriberCount).toBe(0);
    stop();
    bus.publish(alert(2));
    expect(seen).toEqual([1]);
  });

  it('keeps publishing to the others when a listener throws', () => {
    const bus = new EventBus();
    const seen: number[] = [];
    bus.listen(() => { throw new Error('broken listener'); });
    bus.listen((event) => seen.push(event.at));
    bus.publish(alert(1));
    expect(seen).toEqual([1]);
  });

  it('gives a stream the events after it subscribed that pass its filter, beside listeners', async () => {
    const bus = new EventBus();
    const heard: number[] = [];
    bus.listen((event) => heard.push(event.at));
    const controller = new AbortController();
    const stream = bus.subscribe(controller.signal, (event) => event.at % 2 === 0);
    const first = stream.next();
    for (let n = 1; n <= 4; n += 1) bus.publish(alert(n));
    expect((await first).value).toMatchObject({ at: 2 });
    expect((await stream.next()).value).toMatchObject({ at: 4 });
    expect(bus.subscriberCount).toBe(1);
    controller.abort();
    expect((await stream.next()).done).toBe(true);
    expect(bus.subscriberCount).toBe(0);
    expect(heard).toEqual([1, 2, 3, 4]);
  });
});
