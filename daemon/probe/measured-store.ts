// What this node measured of its Ollama (tokens/s per model, load speed), kept in the data
// dir, so that a restarted node bids with what it knew instead of placing its first tasks
// as if every node were equally fast. Written a few seconds after a change (atomically:
// a temporary file renamed over the old one), read once at start. A missing, unreadable
// or foreign file (measured for another Ollama URL) is simply not used: it only speeds up
// learning, and the node measures again as it works.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as limits from '../../protocol/limits.ts';
import { logger } from '../log.ts';

const log = logger('probe:measured');

export const measuredFileName = 'measured-speeds.json';

export interface MeasuredSpeeds {
  /** Generation speed per model (full names, as /api/tags lists them). */
  tokensPerSecond: Record<string, number>;
  /** Bytes of model loaded per second, averaged over cold loads; absent before the first. */
  loadBytesPerSecond?: number;
}

interface MeasuredFile extends MeasuredSpeeds {
  version: 1;
  /** The Ollama these figures describe: another URL may be another machine. */
  ollamaUrl: string;
  savedAt: number;
}

function positive(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

/** The figures of a parsed file, or a reason it cannot be used. */
export function measuredFromFile(parsed: unknown, ollamaUrl: string): MeasuredSpeeds | string {
  if (typeof parsed !== 'object' || parsed === null) return 'not a JSON object';
  const file = parsed as Partial<MeasuredFile>;
  if (file.version !== 1) return `unknown version ${JSON.stringify(file.version)}`;
  if (file.ollamaUrl !== ollamaUrl) return `measured for Ollama at ${String(file.ollamaUrl)}, not ${ollamaUrl}`;
  if (typeof file.tokensPerSecond !== 'object' || file.tokensPerSecond === null) return 'no tokensPerSecond';
  const tokensPerSecond: Record<string, number> = {};
  for (const [model, speed] of Object.entries(file.tokensPerSecond).slice(0, limits.modelsPerNodeMax)) {
    if (model.length > 0 && model.length <= limits.modelNameLengthMax && positive(speed)) tokensPerSecond[model] = speed;
  }
  return positive(file.loadBytesPerSecond) ? { tokensPerSecond, loadBytesPerSecond: file.loadBytesPerSecond } : { tokensPerSecond };
}

/** What was measured last time for this Ollama; empty when nothing usable is on disk. */
export function readMeasured(dataDir: string, ollamaUrl: string): MeasuredSpeeds {
  const path = join(dataDir, measuredFileName);
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') log.warn(`ignoring ${path}: ${(error as Error).message}; speeds will be measured again`);
    return { tokensPerSecond: {} };
  }
  const measured = measuredFromFile(parsed, ollamaUrl);
  if (typeof measured === 'string') {
    log.info(`not using ${path}: ${measured}; speeds will be measured again`);
    return { tokensPerSecond: {} };
  }
  return measured;
}

/** Saves the latest figures `delayMs` after a change (one write per burst of changes). */
export class MeasuredWriter {
  private readonly path: string;
  private readonly ollamaUrl: string;
  private readonly delayMs: number;
  private pending: MeasuredSpeeds | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(dataDir: string, ollamaUrl: string, delayMs = 5_000) {
    this.path = join(dataDir, measuredFileName);
    this.ollamaUrl = ollamaUrl;
    this.delayMs = delayMs;
  }

  schedule(measured: MeasuredSpeeds): void {
    this.pending = measured;
    if (this.timer !== null) return;
    this.timer = setTimeout(() => this.flush(), this.delayMs);
    this.timer.unref();
  }

  /** Writes what is pending now (at stop). Never throws: a failed write is logged. */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const measured = this.pending;
    if (measured === null) return;
    this.pending = null;
    const file: MeasuredFile = { version: 1, ollamaUrl: this.ollamaUrl, savedAt: Date.now(), ...measured };
    const temporary = `${this.path}.tmp`;
    try {
      writeFileSync(temporary, `${JSON.stringify(file, null, 2)}\n`);
      renameSync(temporary, this.path);
    } catch (error) {
      log.warn(`could not save measured speeds to ${this.path}: ${(error as Error).message}`);
    }
  }
}
