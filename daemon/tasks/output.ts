// Live task output: the executing node keeps each attempt's generated chunks in a bounded
// buffer, and watchers read them as they are produced, on this node directly or from any
// other node over one streamed libp2p request (/hivemesh/task-output). Finished attempts
// stay readable for a while, so a watcher that connects just after a fast task ended
// still gets its text. Every buffer, waiter and stream is bounded.
import { DecodeError } from '../../protocol/errors.ts';
import { taskOutputChunkLengthMax } from '../../protocol/limits.ts';
import {
  TASK_OUTPUT_PROTOCOL, outputEventsPerFrameMax, outputFrameBytesMax, taskOutputFrameCodec, taskOutputRequestCodec,
  type TaskOutputFrame,
} from '../../protocol/task-output.ts';
import type { TaskOutputEvent } from '../../protocol/tasks.ts';
import { logger } from '../log.ts';
import type { P2PHost } from '../p2p/host.ts';
import { pieceEnd } from './text-deltas.ts';

const log = logger('tasks:output');

export interface OutputLimits {
  /** Characters of output kept per attempt; the oldest chunks go first beyond it. */
  attemptCharsMax: number;
  /** Attempts kept after they ended, for late watchers, and for how long. */
  endedAttemptsMax: number;
  /** Characters held by ended attempts together; the longest-ended go first beyond it. */
  endedCharsMax: number;
  endedKeepMs: number;
  /** Watchers waiting, across all attempts (local and remote). */
  watchersMax: number;
  /** How long a watcher waits for an attempt this node has not heard of yet to open. */
  openWaitMs: number;
}

export const outputLimitsDefault: OutputLimits = {
  // Four times what the log keeps of an output (taskOutputBytesMax): late watchers of a long
  // generation get its recent text; the whole stored output is in the task once it ends.
  attemptCharsMax: 1024 * 1024,
  endedAttemptsMax: 1_024,
  endedCharsMax: 64 * 1024 * 1024,
  endedKeepMs: 60_000,
  watchersMax: 4_096,
  openWaitMs: 10_000,
};

function attemptKey(taskId: string, attempt: number): string {
  return `${taskId}#${attempt}`;
}

/** Watchers waiting for the next change of a buffer, woken all at once. */
class Wakeups {
  private waiting = new Set<() => void>();

  /** Resolves at the next wakeAll, or when the signal aborts. */
  next(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.waiting.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      this.waiting.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  wakeAll(): void {
    const waiting = this.waiting;
    this.waiting = new Set();
    for (const wake of waiting) wake();
  }
}

/** The chunks of one attempt, bounded, with wake-ups for the watchers. */
export class AttemptOutput {
  readonly taskId: string;
  readonly attempt: number;
  private readonly charsMax: number;
  private readonly chunks: string[] = [];
  private firstSequence = 0;
  private charCount = 0;
  private nextSequenceValue = 0;
  private endedValue = false;
  private endReasonValue = '';
  endedAtMs: number | null = null;
  private readonly wakeups = new Wakeups();

  constructor(taskId: string, attempt: number, charsMax: number) {
    this.taskId = taskId;
    this.attempt = attempt;
    this.charsMax = charsMax;
  }

  /** Characters held now. */
  get chars(): number {
    return this.charCount;
  }

  get nextSequence(): number {
    return this.nextSequenceValue;
  }

  get ended(): boolean {
    return this.endedValue;
  }

  get endReason(): string {
    return this.endReasonValue;
  }

  /** Sequence of the oldest chunk still held. */
  get droppedBefore(): number {
    return this.firstSequence;
  }

  /**
   * Appends generated text, in chunks of at most taskOutputChunkLengthMax UTF-16 units,
   * cut between characters: a chunk never ends inside a surrogate pair.
   */
  append(text: string): void {
    if (this.endedValue || text === '') return;
    for (let offset = 0, end = 0; offset < text.length; offset = end) {
      end = pieceEnd(text, offset, taskOutputChunkLengthMax);
      const piece = text.slice(offset, end);
      this.chunks.push(piece);
      this.charCount += piece.length;
      this.nextSequenceValue += 1;
    }
    // Keep at least the newest chunk: a watcher always sees the latest text.
    while (this.charCount > this.charsMax && this.chunks.length > 1) {
      this.charCount -= this.chunks.shift()!.length;
      this.firstSequence += 1;
    }
    this.wakeups.wakeAll();
  }

  end(reason: string, nowMs: number): void {
    if (this.endedValue) return;
    this.endedValue = true;
    this.endReasonValue = reason;
    this.endedAtMs = nowMs;
    this.wakeups.wakeAll();
  }

  /** Chunks from `fromSequence` on (or from the oldest held), at most `max`. */
  read(fromSequence: number, max: number): TaskOutputEvent[] {
    const start = Math.max(fromSequence, this.firstSequence);
    const events: TaskOutputEvent[] = [];
    for (let sequence = start; sequence < this.nextSequenceValue && events.length < max; sequence += 1) {
      events.push({ type: 'output', taskId: this.taskId, attempt: this.attempt, sequence, text: this.chunks[sequence - this.firstSequence]! });
    }
    return events;
  }

  /** Resolves at the next append or end, or when the signal aborts. */
  changed(signal: AbortSignal): Promise<void> {
    return this.endedValue ? Promise.resolve() : this.wakeups.next(signal);
  }
}

/** Whether an attempt this node has no buffer for may still open here. */
export type AttemptProspect = 'may-open' | 'never';

export interface OutputHubDeps {
  nodeId: string;
  host: Pick<P2PHost, 'handle' | 'request'>;
  /** Whether this node may yet run the attempt (it has not applied the assignment yet). */
  prospect: (taskId: string, attempt: number) => AttemptProspect;
  /** Bound on a remote follow: the attempt's own timeout plus a margin. */
  followTimeoutMs: (taskId: string) => number;
  limits?: Partial<OutputLimits>;
}

/** Buffers of the attempts this node runs, and the output stream between nodes. */
export class OutputHub {
  private readonly deps: OutputHubDeps;
  private readonly limits: OutputLimits;
  private readonly attempts = new Map<string, AttemptOutput>();
  /** Remote attempts watched from here, by attempt and node. */
  private readonly mirrors = new Map<string, RemoteAttempt>();
  /** Ended attempts in the order they ended, for eviction. */
  private readonly endedOrder: string[] = [];
  private endedChars = 0;
  private openWakers = new Set<() => void>();
  private watchers = 0;
  private readonly stopController = new AbortController();

  constructor(deps: OutputHubDeps) {
    this.deps = deps;
    this.limits = { ...outputLimitsDefault, ...deps.limits };
  }

  async start(): Promise<void> {
    await this.deps.host.handle(TASK_OUTPUT_PROTOCOL, async (from, bytes, reply, context) => {
      let request;
      try {
        request = taskOutputRequestCodec.decode(bytes);
      } catch (error) {
        log.debug('refused a malformed output request', { from, error: error as Error });
        await reply.send(taskOutputFrameCodec.encode({ kind: 'end', reason: (error as DecodeError).message.slice(0, 1024), droppedBefore: 0 }));
        return;
      }
      const signal = AbortSignal.any([context.signal, this.stopController.signal]);
      let batch: TaskOutputEvent[] = [];
      let batchBytes = 0;
      const flush = async () => {
        if (batch.length === 0) return;
        const frame: TaskOutputFrame = { kind: 'events', events: batch };
        batch = [];
        batchBytes = 0;
        await reply.send(taskOutputFrameCodec.encode(frame));
      };
      for await (const item of this.read(request.taskId, request.attempt, request.fromSequence, signal)) {
        if (item.kind === 'end') {
          await flush();
          await reply.send(taskOutputFrameCodec.encode({ kind: 'end', reason: item.reason.slice(0, 1024), droppedBefore: item.droppedBefore }));
          return;
        }
        for (const event of item.events) {
          // JSON of a chunk is at most about 6 bytes per character (\u escapes) plus the envelope.
          const eventBytes = event.text.length * 6 + 256;
          if (batch.length >= outputEventsPerFrameMax || batchBytes + eventBytes > outputFrameBytesMax) await flush();
          batch.push(event);
          batchBytes += eventBytes;
        }
        await flush();
      }
    });
  }

  stop(): void {
    this.stopController.abort();
    this.wakeOpen();
  }

  /** The buffer of an attempt this node starts running. */
  open(taskId: string, attempt: number): AttemptOutput {
    const key = attemptKey(taskId, attempt);
    let output = this.attempts.get(key);
    if (output === undefined) {
      output = new AttemptOutput(taskId, attempt, this.limits.attemptCharsMax);
      this.attempts.set(key, output);
      this.wakeOpen();
    }
    return output;
  }

  get(taskId: string, attempt: number): AttemptOutput | undefined {
    return this.attempts.get(attemptKey(taskId, attempt));
  }

  /** Ends an attempt's stream; its buffer stays readable for endedKeepMs (bounded in count). */
  end(output: AttemptOutput, reason: string, nowMs = Date.now()): void {
    if (output.ended) return;
    output.end(reason, nowMs);
    this.endedOrder.push(attemptKey(output.taskId, output.attempt));
    this.endedChars += output.chars;
    this.sweep(nowMs);
  }

  /** Forgets ended attempts past their keep time or beyond the count bound. */
  sweep(nowMs = Date.now()): void {
    while (this.endedOrder.length > 0) {
      const key = this.endedOrder[0]!;
      const output = this.attempts.get(key);
      const expired = output === undefined || output.endedAtMs === null || nowMs - output.endedAtMs >= this.limits.endedKeepMs;
      if (!expired && this.endedOrder.length <= this.limits.endedAttemptsMax && this.endedChars <= this.limits.endedCharsMax) break;
      this.endedOrder.shift();
      if (output !== undefined && output.ended) {
        this.attempts.delete(key);
        this.endedChars -= output.chars;
      }
    }
  }

  get attemptCount(): number {
    return this.attempts.size;
  }

  /**
   * Reads an attempt held here: batches of chunks from `fromSequence`, as they come, then
   * one end item. Waits (bounded) for an attempt this node has not opened yet but may.
   */
  async *read(taskId: string, attempt: number, fromSequence: number, signal: AbortSignal):
    AsyncGenerator<{ kind: 'events'; events: TaskOutputEvent[] } | { kind: 'end'; reason: string; droppedBefore: number }> {
    if (this.watchers >= this.limits.watchersMax) {
      yield { kind: 'end', reason: `this node serves ${this.limits.watchersMax} output watchers already; the final output is in the task once it ends`, droppedBefore: 0 };
      return;
    }
    this.watchers += 1;
    try {
      const output = await this.waitOpen(taskId, attempt, signal);
      if (output === null) {
        if (!signal.aborted) yield { kind: 'end', reason: `attempt ${attempt} of task ${taskId} does not run on node ${this.deps.nodeId}`, droppedBefore: 0 };
        return;
      }
      let next = fromSequence;
      while (!signal.aborted) {
        const wait = output.changed(signal);
        const events = output.read(next, outputEventsPerFrameMax);
        if (events.length > 0) {
          next = events.at(-1)!.sequence + 1;
          yield { kind: 'events', events };
          continue;
        }
        if (output.ended) {
          yield { kind: 'end', reason: output.endReason, droppedBefore: output.droppedBefore };
          return;
        }
        await wait;
      }
    } finally {
      this.watchers -= 1;
    }
  }

  private async waitOpen(taskId: string, attempt: number, signal: AbortSignal): Promise<AttemptOutput | null> {
    const deadline = Date.now() + this.limits.openWaitMs;
    while (!signal.aborted && !this.stopController.signal.aborted) {
      const output = this.get(taskId, attempt);
      if (output !== undefined) return output;
      if (this.deps.prospect(taskId, attempt) === 'never') return null;
      const leftMs = deadline - Date.now();
      if (leftMs <= 0) return null;
      // Woken when any attempt opens; re-checked at least every 250 ms for the prospect.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(250, leftMs));
        const wakers = this.openWakers;
        function done() {
          clearTimeout(timer);
          wakers.delete(done);
          signal.removeEventListener('abort', done);
          resolve();
        }
        wakers.add(done);
        signal.addEventListener('abort', done, { once: true });
      });
    }
    return null;
  }

  private wakeOpen(): void {
    const wakers = this.openWakers;
    this.openWakers = new Set();
    for (const wake of wakers) wake();
  }

  /**
   * OutputSource.follow: the attempt's chunks from the node that runs it. Locally no network
   * is involved; from another node one streamed request, resumed (from the last chunk seen)
   * up to twice when the stream breaks while the signal is live.
   */
  async *follow(taskId: string, attempt: number, nodeId: string, signal: AbortSignal): AsyncGenerator<TaskOutputEvent> {
    if (nodeId === this.deps.nodeId) {
      for await (const item of this.read(taskId, attempt, 0, signal)) {
        if (item.kind === 'end') return;
        yield* item.events;
      }
      return;
    }
    // Every watcher here of one remote attempt shares one stream from its node: a stream
    // per watcher ran into the per-connection stream limit (64), and the watchers beyond
    // it silently got no output.
    const key = `${attemptKey(taskId, attempt)}@${nodeId}`;
    let mirror = this.mirrors.get(key);
    if (mirror === undefined) {
      mirror = new RemoteAttempt(taskId, attempt, this.limits.attemptCharsMax, () => this.mirrors.delete(key));
      this.mirrors.set(key, mirror);
      void mirror.pump((fromSequence, pumpSignal) => this.requestOutput(taskId, attempt, nodeId, fromSequence, pumpSignal));
    }
    yield* mirror.watch(signal);
  }

  /** Remote attempts followed from here now (one stream each, whatever the watchers). */
  get followedRemotely(): number {
    return this.mirrors.size;
  }

  /** One streamed request for an attempt's chunks from `fromSequence`; yields frames until the remote ends. */
  private async *requestOutput(taskId: string, attempt: number, nodeId: string, fromSequence: number, signal: AbortSignal): AsyncGenerator<TaskOutputFrame> {
    const request = taskOutputRequestCodec.encode({ kind: 'task-output', taskId, attempt, fromSequence });
    for await (const bytes of this.deps.host.request(nodeId, TASK_OUTPUT_PROTOCOL, request, { signal, timeoutMs: this.deps.followTimeoutMs(taskId) })) {
      yield taskOutputFrameCodec.decode(bytes);
    }
  }
}

/**
 * What this node has received of an attempt running on another node, shared by every local
 * watcher of it: filled by one streamed request (resumed from the last chunk seen up to
 * twice when the stream breaks), bounded like the executor's buffer. The stream closes when
 * the last watcher leaves; a watcher that comes later starts a new one.
 */
class RemoteAttempt {
  private readonly taskId: string;
  private readonly attempt: number;
  private readonly charsMax: number;
  private readonly onIdle: () => void;
  private readonly events: TaskOutputEvent[] = [];
  private chars = 0;
  private ended = false;
  private failure: Error | null = null;
  private watchers = 0;
  private readonly wakeups = new Wakeups();
  private readonly controller = new AbortController();

  constructor(taskId: string, attempt: number, charsMax: number, onIdle: () => void) {
    this.taskId = taskId;
    this.attempt = attempt;
    this.charsMax = charsMax;
    this.onIdle = onIdle;
  }

  async pump(request: (fromSequence: number, signal: AbortSignal) => AsyncGenerator<TaskOutputFrame>): Promise<void> {
    const signal = this.controller.signal;
    let next = 0;
    try {
      for (let tries = 0; tries < 3 && !signal.aborted; tries += 1) {
        try {
          for await (const frame of request(next, signal)) {
            if (frame.kind === 'end') return;
            for (const event of frame.events) {
              if (event.taskId !== this.taskId || event.attempt !== this.attempt || event.sequence < next) continue;
              next = event.sequence + 1;
              this.add(event);
            }
            this.wakeups.wakeAll();
          }
          return;
        } catch (error) {
          if (signal.aborted) return;
          if (error instanceof DecodeError || tries === 2) {
            this.failure = error as Error;
            return;
          }
          log.debug('output stream broke; resuming', { taskId: this.taskId, attempt: this.attempt, next, error: error as Error });
          await new Promise((resolve) => setTimeout(resolve, 100 * (tries + 1)));
        }
      }
    } finally {
      this.ended = true;
      this.wakeups.wakeAll();
    }
  }

  /** The chunks received so far, then the new ones, until the attempt's end; throws if the stream failed. */
  async *watch(signal: AbortSignal): AsyncGenerator<TaskOutputEvent> {
    this.watchers += 1;
    let next = 0;
    try {
      while (!signal.aborted) {
        const wait = this.changed(signal);
        const first = this.events[0];
        const start = first === undefined ? 0 : Math.max(0, next - first.sequence);
        if (start < this.events.length) {
          const batch = this.events.slice(start);
          next = batch.at(-1)!.sequence + 1;
          yield* batch;
          continue;
        }
        if (this.ended) {
          if (this.failure !== null) throw this.failure;
          return;
        }
        await wait;
      }
    } finally {
      this.watchers -= 1;
      if (this.watchers === 0) {
        this.controller.abort();
        this.onIdle();
      }
    }
  }

  private add(event: TaskOutputEvent): void {
    this.events.push(event);
    this.chars += event.text.length;
    // Keep at least the newest chunk, as the executor does.
    while (this.chars > this.charsMax && this.events.length > 1) this.chars -= this.events.shift()!.text.length;
  }

  private changed(signal: AbortSignal): Promise<void> {
    return this.ended ? Promise.resolve() : this.wakeups.next(signal);
  }
}
