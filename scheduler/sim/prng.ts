// Seeded pseudo-random source for the simulator: xoshiro128** on 32-bit integers, seeded
// through splitmix32. Every random choice of a simulation draws from one of these, so a
// seed replays the same run byte for byte. Math.random is never used in scheduler/sim/.

const twoPow32 = 0x1_0000_0000;
/** Rejection sampling almost never loops; this bound turns a broken generator into a crash. */
const rejectionTriesMax = 64;

function splitmix32(state: { value: number }): number {
  state.value = (state.value + 0x9e3779b9) | 0;
  let mixed = state.value;
  mixed = Math.imul(mixed ^ (mixed >>> 16), 0x21f0aaad);
  mixed = Math.imul(mixed ^ (mixed >>> 15), 0x735a2d97);
  return (mixed ^ (mixed >>> 15)) >>> 0;
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /** `seed` is any non-negative safe integer; both its 32-bit halves feed the state. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new RangeError(`PRNG seed must be a non-negative safe integer, got ${seed}`);
    }
    const state = { value: (seed >>> 0) ^ Math.imul(Math.floor(seed / twoPow32), 0x85ebca6b) };
    this.s0 = splitmix32(state);
    this.s1 = splitmix32(state);
    this.s2 = splitmix32(state);
    this.s3 = splitmix32(state);
    // xoshiro's all-zero state is a fixed point; splitmix32 cannot produce four zeros in a
    // row in practice, but the assertion makes the impossible loud.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) throw new Error('PRNG state is all zero');
  }

  /** Next uniformly distributed unsigned 32-bit integer. */
  nextU32(): number {
    const result = Math.imul(rotateLeft(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const shifted = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= shifted;
    this.s3 = rotateLeft(this.s3, 11);
    return result;
  }

  /** Uniform integer in [0, n), without modulo bias. */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0 || n > twoPow32) throw new RangeError(`PRNG.int needs 1 <= n <= 2^32, got ${n}`);
    const limit = twoPow32 - (twoPow32 % n);
    for (let tries = 0; tries < rejectionTriesMax; tries++) {
      const value = this.nextU32();
      if (value < limit) return value % n;
    }
    throw new Error(`PRNG.int(${n}) rejected ${rejectionTriesMax} draws in a row; the generator is broken`);
  }

  /** Uniform integer in [low, high] (both inclusive). */
  range(low: number, high: number): number {
    if (high < low) throw new RangeError(`PRNG.range needs low <= high, got [${low}, ${high}]`);
    return low + this.int(high - low + 1);
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  float(): number {
    return this.nextU32() / twoPow32;
  }

  /** True with probability `probability`. */
  chance(probability: number): boolean {
    if (probability <= 0) return false;
    if (probability >= 1) return true;
    return this.float() < probability;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('PRNG.pick from an empty list');
    return items[this.int(items.length)] as T;
  }

  /** Index chosen with probability proportional to its weight (weights >= 0, sum > 0). */
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const weight of weights) total += weight;
    if (!(total > 0)) throw new RangeError('PRNG.weighted needs a positive total weight');
    let point = this.float() * total;
    for (let index = 0; index < weights.length; index++) {
      point -= weights[index] as number;
      if (point < 0) return index;
    }
    return weights.length - 1;
  }

  /**
   * An independent generator derived from this one. Giving each concern (network, clocks,
   * clients, faults, the core's election timers) its own stream keeps a change in how one
   * concern draws from shifting every other concern's choices.
   */
  fork(): Prng {
    return new Prng(this.nextU32() * 0x20_0000 + (this.nextU32() >>> 11));
  }
}
