// The simulated network: faults happen at the configured rates, partitions cut exactly the
// links they should, in-flight messages are bounded, and delivered copies share nothing.
import { describe, expect, it } from 'vitest';
import type { Message } from '../consensus/types.ts';
import { cloneMessage, quietNetwork, SimNetwork } from './network.ts';
import { Prng } from './prng.ts';

const nodes = ['n1', 'n2', 'n3', 'n4'];
const message = (from: string, to: string): Message => ({ type: 'heartbeat', from, to, term: 1 });

function network(faults = quietNetwork, inFlightMax = 1_000): SimNetwork {
  return new SimNetwork({ nodes, delayMinUs: 10, delayMaxUs: 20, slowDelayMaxUs: 500, faults, inFlightMax }, new Prng(3));
}

describe('SimNetwork', () => {
  it('delivers every message exactly once within the delay bounds when quiet', () => {
    const net = network();
    for (let count = 0; count < 200; count++) {
      const delays = net.send(message('n1', 'n2'));
      expect(delays).toHaveLength(1);
      expect(delays[0]).toBeGreaterThanOrEqual(10);
      expect(delays[0]).toBeLessThanOrEqual(20);
      expect(net.arrive(message('n1', 'n2'))).toBe(true);
    }
    expect(net.counters.delivered).toBe(200);
    expect(net.messagesInFlight).toBe(0);
  });

  it('drops, duplicates and slows messages at roughly the configured rates', () => {
    const net = network({ dropProbability: 0.2, duplicateProbability: 0.1, slowProbability: 0.3 }, 100_000);
    let slow = 0;
    let copies = 0;
    for (let count = 0; count < 10_000; count++) {
      const delays = net.send(message('n1', 'n2'));
      copies += delays.length;
      slow += delays.filter((delay) => delay > 20).length;
    }
    expect(net.counters.dropped).toBeGreaterThan(1_700);
    expect(net.counters.dropped).toBeLessThan(2_300);
    expect(net.counters.duplicated).toBeGreaterThan(600);
    expect(copies).toBe(10_000 - net.counters.dropped + net.counters.duplicated);
    expect(slow / copies).toBeGreaterThan(0.25);
  });

  it('cuts links by partition shape and heals them', () => {
    const net = network();
    net.isolate('n1');
    expect(net.send(message('n1', 'n2'))).toEqual([]);
    expect(net.send(message('n3', 'n1'))).toEqual([]);
    expect(net.send(message('n2', 'n3'))).toHaveLength(1);
    net.heal();
    net.split(['n1', 'n2'], ['n3', 'n4']);
    expect(net.isCut('n1', 'n3')).toBe(true);
    expect(net.isCut('n4', 'n2')).toBe(true);
    expect(net.isCut('n1', 'n2')).toBe(false);
    net.heal();
    net.cut('n1', 'n2');
    expect(net.isCut('n1', 'n2')).toBe(true);
    expect(net.isCut('n2', 'n1')).toBe(false);
    expect(net.partitioned).toBe(true);
    net.heal();
    expect(net.partitioned).toBe(false);
  });

  it('loses a message in flight when a partition starts before it arrives', () => {
    const net = network();
    expect(net.send(message('n1', 'n2'))).toHaveLength(1);
    net.cut('n1', 'n2');
    expect(net.arrive(message('n1', 'n2'))).toBe(false);
    expect(net.messagesInFlight).toBe(0);
  });

  it('bounds the messages in flight', () => {
    const net = network(quietNetwork, 5);
    for (let count = 0; count < 10; count++) net.send(message('n1', 'n2'));
    expect(net.messagesInFlight).toBe(5);
    expect(net.counters.overflowed).toBe(5);
  });

  it('refuses messages between unknown nodes', () => {
    expect(() => network().send(message('n1', 'n9'))).toThrow(/unknown nodes/);
  });

  it('clones messages deeply', () => {
    const original: Message = {
      type: 'append', from: 'n1', to: 'n2', term: 2, entries: [{ term: 2, index: 1, type: 'normal', data: 'x' }],
      snapshot: { index: 1, term: 1, config: { voters: ['n1'], learners: [] }, data: '' },
    };
    const copy = cloneMessage(original);
    expect(copy).toEqual(original);
    (copy.entries?.[0] as { data: string }).data = 'changed';
    copy.snapshot?.config.voters.push('n9');
    expect(original.entries?.[0]?.data).toBe('x');
    expect(original.snapshot?.config.voters).toEqual(['n1']);
  });
});
