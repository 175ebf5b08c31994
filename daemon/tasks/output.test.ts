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
