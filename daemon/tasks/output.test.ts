// The bounded output buffers and the hub that serves them: chunking, eviction of the oldest
// text, reading from a sequence, waking watchers, waiting for an attempt to open, keeping
// ended attempts for late watchers, and the watcher bound.
import { describe, expect, it } from 'vitest';
import { taskOutputChunkLengthMax } from '../../protocol/limits.ts';
import { taskOutputFrameCodec, taskOutputRequestCodec } from '../../protocol/task-output.ts';
import { AttemptOutput, OutputHub, type AttemptProspect } from './output.ts';

const noHost = {
  handle: async () => undefined,
  request: (): AsyncGenerator<Uint8Array> => { throw new Error('no network in this test'); },
};

function hub(prospect: AttemptProspect = 'never', limits = {}): OutputHub {
  return new OutputHub({ nodeId: 'n1', host: noHost, prospect: () => prospect, followTimeoutMs: () => 5_000, limits });
}

describe('AttemptOutput', () => {
  it('numbers chunks from 0 and splits long text at the chunk bound', () => {
    const output = new AttemptOutput('t1', 1, 1_000_000);
    output.append('Hello');
    output.append('');
    output.append('x'.repeat(taskOutputChunkLengthMax + 10));
    const events = output.read(0, 100);
    expect(events.map((event) => event.sequence)).toEqual([0, 1, 2]);
    expect(events.map((event) => event.text.length)).toEqual([5, taskOutputChunkLengthMax, 10]);
    expect(events.every((event) => event.taskId === 't1' && event.attempt === 1 && event.type === 'output')).toBe(true);
    expect(output.read(2, 100).map((event) => event.sequence)).toEqual([2]);
    expect(output.read(0, 2)).toHaveLength(2);
  });

  it('never ends a chunk inside a surrogate pair when it splits long text', () => {
    const output = new AttemptOutput('t1', 1, 1_000_000);
    // The chunk bound falls between the halves of the first 😀.
    const text = `${'x'.repeat(taskOutputChunkLengthMax - 1)}${'😀'.repeat(taskOutputChunkLengthMax)}`;
    output.append(text);
    const chunks = output.read(0, 100).map((event) => event.text);
    expect(chunks.map((chunk) => chunk.length)).toEqual([taskOutputChunkLengthMax - 1, taskOutputChunkLengthMax, taskOutputChunkLengthMax]);
    for (const chunk of chunks) expect(chunk).not.toMatch(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/);
    expect(chunks.join('')).toBe(text);
  });

  it('drops the oldest chunks beyond its character bound and says from where it holds', () => {
    const output = new AttemptOutput('t1', 2, 10);
    for (const word of ['aaaa', 'bbbb', 'cccc', 'dddd']) output.append(word);
    expect(output.droppedBefore).toBe(2);
    expect(output.read(0, 10).map((event) => event.text)).toEqual(['cccc', 'dddd']);
    expect(output.nextSequence).toBe(4);
    // A single chunk larger than the bound is still kept: the newest text is never lost.
    output.append('e'.repeat(50));
    expect(output.read(0, 10).map((event) => event.text)).toEqual(['e'.repeat(50)]);
  });

  it('wakes a waiting watcher on append and on end, and ignores text after the end', async () => {
    const output = new AttemptOutput('t1', 1, 100);
    const signal = new AbortController().signal;
    const woken = output.changed(signal);
    output.append('hi');
    await woken;
    const ended = output.changed(signal);
    output.end('done', 1_000);
    await ended;
    output.append('late');
    expect(output.read(0, 10).map((event) => event.text)).toEqual(['hi']);
    expect(output.ended).toBe(true);
    expect(output.endReason).toBe('done');
  });
});

describe('OutputHub', () => {
  it('streams what exists, then new chunks, then ends, to a local follower', async () => {
    const outputs = hub();
    const output = outputs.open('t1', 1);
    output.append('one ');
    const seen: string[] = [];
    const following = (async () => {
      for await (const event of outputs.follow('t1', 1, 'n1', AbortSignal.timeout(5_000))) seen.push(event.text);
    })();
    await new Promise((resolve) => setTimeout(resolve, 10));
    output.append('two ');
    output.append('three');
    outputs.end(output, 'completed');
    await following;
    expect(seen.join('')).toBe('one two three');
  });

  it('waits for an attempt that may still open here, and gives up on one that never will', async () => {
    const maybe = hub('may-open', { openWaitMs: 2_000 });
    const seen: string[] = [];
    const following = (async () => {
      for await (const event of maybe.follow('t9', 1, 'n1', AbortSignal.timeout(5_000))) seen.push(event.text);
    })();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const output = maybe.open('t9', 1);
    output.append('late start');
    maybe.end(output, 'completed');
    await following;
    expect(seen).toEqual(['late start']);

    const never = hub('never');
    const started = Date.now();
    const items = [];
    for await (const item of never.read('t0', 1, 0, AbortSignal.timeout(5_000))) items.push(item);
    expect(items).toEqual([{ kind: 'end', reason: 'attempt 1 of task t0 does not run on node n1', droppedBefore: 0 }]);
    expect(Date.now() - started).toBeLessThan(500);
  });

  it('bounds the wait for an attempt that never opens', async () => {
    const outputs = hub('may-open', { openWaitMs: 150 });
    const started = Date.now();
    const items = [];
    for await (const item of outputs.read('t0', 1, 0, AbortSignal.timeout(5_000))) items.push(item);
    expect(items[0]?.kind).toBe('end');
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('keeps ended attempts for late watchers, within the count and age bounds', () => {
    const outputs = hub('never', { endedAttemptsMax: 2, endedKeepMs: 1_000 });
    for (let n = 1; n <= 3; n += 1) {
      const output = outputs.open(`t${n}`, 1);
      output.append(`text ${n}`);
      outputs.end(output, 'completed', 10_000 + n);
    }
    expect(outputs.get('t1', 1)).toBeUndefined();
    expect(outputs.get('t2', 1)?.read(0, 10)[0]?.text).toBe('text 2');
    outputs.sweep(10_002 + 1_000);
    expect(outputs.get('t2', 1)).toBeUndefined();
    expect(outputs.get('t3', 1)).toBeDefined();
    const running = outputs.open('t4', 1);
    outputs.sweep(99_999);
    expect(outputs.get('t4', 1)).toBe(running);
  });

  it('bounds the text ended attempts hold together', () => {
    const outputs = hub('never', { endedCharsMax: 25 });
    for (let n = 1; n <= 4; n += 1) {
      const output = outputs.open(`t${n}`, 1);
      output.append('x'.repeat(10));
      outputs.end(output, 'completed', 1_000 + n);
    }
    expect(['t1', 't2', 't3', 't4'].map((id) => outputs.get(id, 1) !== undefined)).toEqual([false, false, true, true]);
  });

  it('refuses watchers beyond its bound with a reason', async () => {
    const outputs = hub('may-open', { watchersMax: 1, openWaitMs: 300 });
    const first = outputs.read('t1', 1, 0, AbortSignal.timeout(5_000));
    const pending = first.next();
    const items = [];
    for await (const item of outputs.read('t1', 1, 0, AbortSignal.timeout(5_000))) items.push(item);
    expect(items[0]).toMatchObject({ kind: 'end' });
    expect((items[0] as { reason: string }).reason).toMatch(/1 output watchers already/);
    await pending;
  });
});

describe('task output wire codecs', () => {
  it('round-trips a request and frames, and refuses malformed ones with the reason', () => {
    const request = { kind: 'task-output' as const, taskId: 't_1', attempt: 2, fromSequence: 5 };
    expect(taskOutputRequestCodec.decode(taskOutputRequestCodec.encode(request))).toEqual(request);
    const frame = { kind: 'events' as const, events: [{ type: 'output' as const, taskId: 't_1', attempt: 2, sequence: 5, text: 'hi' }] };
    expect(taskOutputFrameCodec.decode(taskOutputFrameCodec.encode(frame))).toEqual(frame);
    expect(() => taskOutputRequestCodec.decode(new TextEncoder().encode('{"kind":"task-output","taskId":"a b","attempt":0,"fromSequence":0}'))).toThrow(/invalid task output request/);
    expect(() => taskOutputFrameCodec.decode(new Uint8Array(600 * 1024))).toThrow(/over the/);
  });
});

describe('following an attempt on another node', () => {
  /** Two hubs joined by an in-memory request path; counts the streams opened to the executor. */
  function pair() {
    let handler: ((from: string, bytes: Uint8Array, reply: { send(bytes: Uint8Array): Promise<void>; end(): Promise<void> }, context: { signal: AbortSignal }) => Promise<void>) | null = null;
    const streams = { opened: 0, open: 0 };
    const executor = new OutputHub({
      nodeId: 'exec', prospect: () => 'never', followTimeoutMs: () => 5_000,
      host: { handle: async (_protocol: string, serve: typeof handler) => { handler = serve; }, request: () => { throw new Error('unused'); } } as never,
    });
    const watcherHub = new OutputHub({
      nodeId: 'watch', prospect: () => 'never', followTimeoutMs: () => 5_000,
      host: {
        handle: async () => undefined,
        request: async function* (_node: string, _protocol: string, bytes: Uint8Array, options: { signal?: AbortSignal }) {
          streams.opened += 1;
          streams.open += 1;
          const frames: Uint8Array[] = [];
          let ended = false;
          let wake: (() => void) | null = null;
          const served = handler!('watch', bytes, {
            send: async (frame) => { frames.push(frame); wake?.(); },
            end: async () => { ended = true; wake?.(); },
          }, { signal: options.signal ?? new AbortController().signal }).then(() => { ended = true; wake?.(); });
          try {
            while (true) {
              if (frames.length > 0) {
                yield frames.shift()!;
                continue;
              }
              if (ended) break;
              await new Promise<void>((resolve) => { wake = resolve; });
              wake = null;
            }
            await served;
          } finally {
            streams.open -= 1;
          }
        },
      } as never,
    });
    return { executor, watcherHub, streams };
  }

  async function collect(hubToUse: OutputHub, signal = AbortSignal.timeout(5_000)): Promise<string> {
    let text = '';
    for await (const event of hubToUse.follow('t1', 1, 'exec', signal)) text += event.text;
    return text;
  }

  it('serves every local watcher of one remote attempt from one stream, beyond the per-connection stream limit', async () => {
    const { executor, watcherHub, streams } = pair();
    await executor.start();
    const output = executor.open('t1', 1);
    output.append('Hello');
    const watchers = Array.from({ length: 300 }, () => collect(watcherHub));
    await new Promise((resolve) => setTimeout(resolve, 20));
    output.append(', world');
    const late = collect(watcherHub);
    await new Promise((resolve) => setTimeout(resolve, 20));
    executor.end(output, 'completed');
    const texts = await Promise.all([...watchers, late]);
    expect(new Set(texts)).toEqual(new Set(['Hello, world']));
    expect(streams.opened).toBe(1);
    expect(streams.open).toBe(0);
    expect(watcherHub.followedRemotely).toBe(0);
    // A watcher after everyone left opens a new stream and still gets the ended attempt's text.
    expect(await collect(watcherHub)).toBe('Hello, world');
    expect(streams.opened).toBe(2);
  });

  it('closes the shared stream when the last watcher leaves', async () => {
    const { executor, watcherHub, streams } = pair();
    await executor.start();
    executor.open('t1', 1).append('partial');
    const controllers = [new AbortController(), new AbortController()];
    const watchers = controllers.map((controller) => collect(watcherHub, controller.signal));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(streams.open).toBe(1);
    controllers[0]!.abort();
    await watchers[0];
    expect(streams.open).toBe(1);
    controllers[1]!.abort();
    expect(await watchers[1]).toBe('partial');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(streams.open).toBe(0);
    expect(watcherHub.followedRemotely).toBe(0);
  });
});
