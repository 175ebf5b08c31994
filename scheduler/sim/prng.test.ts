// The seeded PRNG: same seed, same stream; different seeds, different streams; draws stay
// in range and are roughly uniform.
import { describe, expect, it } from 'vitest';
import { Prng } from './prng.ts';

describe('Prng', () => {
  it('replays the same stream for the same seed', () => {
    const a = new Prng(42);
    const b = new Prng(42);
    const drawsA = Array.from({ length: 100 }, () => a.nextU32());
    const drawsB = Array.from({ length: 100 }, () => b.nextU32());
    expect(drawsA).toEqual(drawsB);
  });

  it('gives different streams for neighbouring seeds, including above 2^32', () => {
    const first = (seed: number) => { const random = new Prng(seed); return [random.nextU32(), random.nextU32()]; };
    expect(first(1)).not.toEqual(first(2));
    expect(first(2 ** 32 + 1)).not.toEqual(first(1));
  });

  it('keeps int() in range and close to uniform', () => {
    const random = new Prng(7);
    const counts = new Array<number>(7).fill(0);
    for (let draw = 0; draw < 60_000; draw++) {
      const value = random.int(6);
      // Anything out of range lands in the last slot, which must stay empty.
      const slot = Number.isInteger(value) && value >= 0 && value < 6 ? value : 6;
      counts[slot] = (counts[slot] as number) + 1;
    }
    expect(counts[6]).toBe(0);
    for (const count of counts.slice(0, 6)) expect(Math.abs(count - 10_000)).toBeLessThan(500);
  });

  it('keeps range(), float() and weighted() within their bounds', () => {
    const random = new Prng(9);
    const seen = new Set<number>();
    for (let draw = 0; draw < 1_000; draw++) {
      const value = random.range(3, 5);
      seen.add(value);
      const float = random.float();
      expect(float >= 0 && float < 1).toBe(true);
      expect(random.weighted([0, 1, 0])).toBe(1);
    }
    expect([...seen].sort()).toEqual([3, 4, 5]);
  });

  it('forks independent but reproducible streams', () => {
    const parentA = new Prng(5);
    const parentB = new Prng(5);
    const childA = parentA.fork();
    const childB = parentB.fork();
    expect(childA.nextU32()).toBe(childB.nextU32());
    expect(childA.nextU32()).not.toBe(parentA.nextU32());
  });

  it('refuses bad arguments with a clear message', () => {
    expect(() => new Prng(-1)).toThrow(/non-negative safe integer/);
    expect(() => new Prng(1).int(0)).toThrow(/1 <= n/);
    expect(() => new Prng(1).pick([])).toThrow(/empty/);
  });
});
