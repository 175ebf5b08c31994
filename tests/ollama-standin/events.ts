// The stand-in's event log: one JSON object per line, appended synchronously so that a test
// in another process that reads the file after a request has finished sees every event of
// that request. `readStandinLog` and `summarizeGenerations` are the reading side.
import { appendFileSync, readFileSync, existsSync } from 'node:fs';

export type StandinEventKind =
  | 'listening' | 'start' | 'finish' | 'abort' | 'break' | 'fail' | 'load' | 'unload' | 'embed' | 'pull' | 'delete';

export interface StandinEvent {
  ts: string;
  event: StandinEventKind;
  /** Generation id, for start, finish, abort and break. */
  id?: number;
  model?: string;
  endpoint?: string;
  promptSha256?: string;
  tokens?: number;
  doneReason?: string;
  [key: string]: unknown;
}

export class StandinEventLog {
  readonly path: string | null;

  constructor(path: string | null) {
    this.path = path;
  }

  write(event: Omit<StandinEvent, 'ts'>): void {
    if (this.path === null) return;
    appendFileSync(this.path, JSON.stringify({ ts: new Date().toISOString(), ...event }) + '\n');
  }
}

/** Every event in a stand-in log file; an absent file has none. A torn last line is skipped. */
export function readStandinLog(path: string): StandinEvent[] {
  if (!existsSync(path)) return [];
  const events: StandinEvent[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    try {
      events.push(JSON.parse(line) as StandinEvent);
    } catch {
      // Only the line being appended right now can be incomplete; it is counted next read.
    }
  }
  return events;
}

export interface GenerationCounts {
  started: number;
  finished: number;
  aborted: number;
  /** Generations whose connection the stand-in cut on purpose (the `break` knob). */
  broken: number;
  /** Started and not yet ended. */
  running: number;
  byModel: Record<string, number>;
}

export function summarizeGenerations(events: readonly StandinEvent[]): GenerationCounts {
  const counts: GenerationCounts = { started: 0, finished: 0, aborted: 0, broken: 0, running: 0, byModel: {} };
  for (const event of events) {
    if (event.event === 'start') {
      counts.started++;
      const model = event.model ?? '?';
      counts.byModel[model] = (counts.byModel[model] ?? 0) + 1;
    } else if (event.event === 'finish') counts.finished++;
    else if (event.event === 'abort') counts.aborted++;
    else if (event.event === 'break') counts.broken++;
  }
  counts.running = counts.started - counts.finished - counts.aborted - counts.broken;
  return counts;
}
