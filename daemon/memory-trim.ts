// Gives memory back while the daemon idles. Under load V8 grows its young generation and
// old space and keeps those pages afterwards: measured on three idle loopback daemons, 67-70 MB
// of V8 pages resident against a live heap of ~40 MB (scripts/bench/FINDINGS.md, finding 13).
// V8's own memory reducer waits for a low allocation rate, which a daemon whose timers
// allocate a little all the time (Raft heartbeats, gossip, the probe) rarely shows. So once
// the node has been idle for two minutes (the event loop nearly idle, no generation here),
// and again every two minutes while it stays so, the daemon asks for one memory-reducing
// full collection (V8's "last resort" flavour; an ordinary full collection gives nothing
// back): ~40 MB per daemon, for 60-150 ms of one turn on the loaded test machine. Not
// sooner: the collection also drops compiled code, and the first seconds of load after it
// ran measurably slower (finding 13), which a node between bursts should not pay.
import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { logger } from './log.ts';

const log = logger('memory');

export interface IdleMemoryTrimOptions {
  /** How often the event loop's utilization is sampled. */
  checkEveryMs?: number;
  /** Consecutive idle samples before the first trim after work. */
  idleChecksBeforeTrim?: number;
  /** While the node stays idle, trims this often. */
  trimEveryMs?: number;
  /** A sample is idle when the loop was busy at most this share of it. */
  idleUtilizationMax?: number;
  /** A collection slower than this backs the next one off to ten times trimEveryMs. */
  slowTrimMs?: number;
  /** Work in progress on this node (tasks, gateway requests): no trim meanwhile. */
  busy?: () => boolean;
  /** Test seams. */
  utilization?: () => number;
  collect?: () => void;
  now?: () => number;
}

/** The memory-reducing full collection, or null where the runtime refuses to expose it. */
export function memoryReducingCollector(): (() => void) | null {
  try {
    v8.setFlagsFromString('--expose-gc');
    // The function lives in a fresh context: the daemon's own global scope gains no `gc`.
    const gc = vm.runInNewContext('gc') as unknown;
    if (typeof gc !== 'function') return null;
    return () => (gc as (options: object) => void)({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  } catch {
    return null;
  }
}

/** Event-loop utilization since the previous call (0..1). */
function utilizationSampler(): () => number {
  let previous = performance.eventLoopUtilization();
  return () => {
    const current = performance.eventLoopUtilization();
    const delta = performance.eventLoopUtilization(current, previous);
    previous = current;
    return delta.utilization;
  };
}

export class IdleMemoryTrim {
  readonly #checkEveryMs: number;
  readonly #idleChecksBeforeTrim: number;
  readonly #trimEveryMs: number;
  readonly #idleUtilizationMax: number;
  readonly #slowTrimMs: number;
  readonly #busy: () => boolean;
  readonly #utilization: () => number;
  readonly #collect: (() => void) | null;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  #idleChecks = 0;
  /** Work happened since the last trim: trim as soon as the node is idle again. */
  #workedSinceTrim = true;
  #lastTrimMs = -Infinity;
  /** After a slow collection (a starved machine), the next waits this long whatever happens. */
  #backOffUntilMs = -Infinity;
  trims = 0;

  constructor(options: IdleMemoryTrimOptions = {}) {
    this.#checkEveryMs = options.checkEveryMs ?? 5_000;
    this.#idleChecksBeforeTrim = options.idleChecksBeforeTrim ?? 24;
    this.#trimEveryMs = options.trimEveryMs ?? 120_000;
    this.#idleUtilizationMax = options.idleUtilizationMax ?? 0.15;
    this.#slowTrimMs = options.slowTrimMs ?? 200;
    this.#busy = options.busy ?? (() => false);
    this.#utilization = options.utilization ?? utilizationSampler();
    this.#collect = options.collect ?? memoryReducingCollector();
    this.#now = options.now ?? (() => Date.now());
  }

  start(): void {
    if (this.#collect === null) {
      log.debug('the runtime does not expose a memory-reducing collection; idle trimming is off');
      return;
    }
    this.#timer = setInterval(() => this.check(), this.#checkEveryMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** One sample; trims when due. Returns true when it trimmed. */
  check(): boolean {
    const utilization = this.#utilization();
    if (this.#collect === null) return false;
    if (utilization > this.#idleUtilizationMax || this.#busy()) {
      this.#idleChecks = 0;
      this.#workedSinceTrim = true;
      return false;
    }
    this.#idleChecks += 1;
    if (this.#idleChecks < this.#idleChecksBeforeTrim) return false;
    const now = this.#now();
    if (!this.#workedSinceTrim && now - this.#lastTrimMs < this.#trimEveryMs) return false;
    if (now < this.#backOffUntilMs) return false;
    const started = performance.now();
    this.#collect();
    const tookMs = performance.now() - started;
    this.trims += 1;
    this.#workedSinceTrim = false;
    this.#lastTrimMs = now;
    // A pause near a Raft election timeout (400 ms) could cost a leader its lease: on a
    // machine that slow, trim rarely.
    if (tookMs > this.#slowTrimMs) this.#backOffUntilMs = now + 10 * this.#trimEveryMs;
    log.debug('idle: gave unused heap back', { ms: Math.round(tookMs), rssMb: Math.round(process.memoryUsage.rss() / 2 ** 20) });
    // The collection's own time must not count as work in the next sample.
    this.#utilization();
    return true;
  }
}
