// When an idle daemon gives memory back: after a few idle samples, then once a minute while
// idle, at once after work, never while the loop is busy or tasks run here.
import { describe, expect, it } from 'vitest';
import { IdleMemoryTrim, memoryReducingCollector } from './memory-trim.ts';

function trimmer(options: { busy?: () => boolean; collectMs?: number } = {}) {
  let now = 0;
  let load = 0;
  let collections = 0;
  const trim = new IdleMemoryTrim({
    checkEveryMs: 5_000, idleChecksBeforeTrim: 2, trimEveryMs: 60_000, idleUtilizationMax: 0.15, slowTrimMs: 200,
    utilization: () => load,
    collect: () => {
      collections += 1;
      // A collection that takes this long (busy-waits, as a starved machine would).
      const until = performance.now() + (options.collectMs ?? 0);
      while (performance.now() < until) { /* the pause */ }
    },
    now: () => now,
    ...(options.busy === undefined ? {} : { busy: options.busy }),
  });
  return {
    /** One sample `ms` after the previous one with the loop this busy; returns whether it trimmed. */
    step: (utilization: number, ms = 5_000) => { load = utilization; now += ms; return trim.check(); },
    collections: () => collections,
  };
}

describe('IdleMemoryTrim', () => {
  it('trims after two idle samples, then not again until a minute has passed while idle', () => {
    const { step, collections } = trimmer();
    expect(step(0.01)).toBe(false);
    expect(step(0.01)).toBe(true);
    for (let check = 0; check < 11; check += 1) expect(step(0.01)).toBe(false);
    expect(step(0.01)).toBe(true);
    expect(collections()).toBe(2);
  });

  it('never trims while the event loop is busy', () => {
    const { step, collections } = trimmer();
    for (let check = 0; check < 30; check += 1) expect(step(0.4)).toBe(false);
    expect(collections()).toBe(0);
  });

  it('after work, trims as soon as the node is idle again, even within the minute', () => {
    const { step } = trimmer();
    step(0);
    expect(step(0)).toBe(true);
    expect(step(0.5)).toBe(false);
    expect(step(0)).toBe(false);
    expect(step(0)).toBe(true);
  });

  it('never trims while tasks run on this node, however quiet the loop', () => {
    let running = true;
    const { step, collections } = trimmer({ busy: () => running });
    for (let check = 0; check < 20; check += 1) expect(step(0)).toBe(false);
    running = false;
    expect(step(0)).toBe(false);
    expect(step(0)).toBe(true);
    expect(collections()).toBe(1);
  });

  it('after a slow collection, waits ten minutes before the next, even after work', () => {
    const { step, collections } = trimmer({ collectMs: 250 });
    step(0);
    expect(step(0)).toBe(true);
    expect(step(0.5)).toBe(false);
    // Nine and a half minutes of idle samples: none trims.
    for (let check = 0; check < 114; check += 1) expect(step(0)).toBe(false);
    for (let check = 0; check < 7 && collections() === 1; check += 1) step(0);
    expect(collections()).toBe(2);
  });

  it('the real collector runs on this runtime', () => {
    const collect = memoryReducingCollector();
    expect(collect).not.toBeNull();
    let garbage: unknown[] | null = Array.from({ length: 100_000 }, (_, index) => ({ index }));
    expect(garbage.length).toBe(100_000);
    garbage = null;
    expect(() => collect!()).not.toThrow();
    expect((globalThis as { gc?: unknown }).gc).toBeUndefined();
  });
});
