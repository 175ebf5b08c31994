// Unit tests of the dashboard's pure browser modules, run in Node: the SSE parser and
// stream follower, live output bookkeeping, field errors of a 400, event summaries and
// human units. The modules are plain JS for the browser, so they are imported by path
// and typed here by the little each test needs.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';

type SseMessage = { event: string; data: string; id: string | null };
interface SseModule {
  SseParser: new (onMessage: (message: SseMessage) => void) => { push(chunk: string): void; retryMs: number | null };
  SseParseError: new (message: string) => Error;
  sseLineLengthMax: number;
  sseEventLengthMax: number;
  reconnectDelayMs(failures: number, random?: number): number;
  reconnectDelayMsMax: number;
  followEventStream(url: string, headers: () => Record<string, string>, handlers: {
    onOpen?: () => void;
    onMessage: (message: SseMessage) => void;
    onProblem?: (problem: { message: string; retryInMs: number | null; status: number }) => void;
    shouldStop?: () => boolean;
    idleMs?: number;
  }, signal: AbortSignal): Promise<void>;
}
interface LiveOutputInstance { attempt: number; nextSequence: number; text: string; gap: boolean; cutFront: boolean; accept(chunk: { attempt: number; sequence: number; text: string }): string }
interface TasksModule { LiveOutput: new () => LiveOutputInstance; liveOutputLengthMax: number }
interface FormatModule {
  bytes(value: number | null): string;
  duration(ms: number): string;
  ago(ms: number): string;
  expiresIn(iso: string | null, nowMs: number): string;
  excerpt(text: string, length: number): string;
  shortId(id: string | null): string;
  safeHttpUrl(url: string): string | null;
}
interface ApiModule { fieldErrorsOf(details: unknown): Array<{ field: string; reason: string }> }
interface EventsModule { describeEvent(data: unknown, raw: string, nodeNames?: Map<string, string>): string }

// A variable specifier keeps tsc from looking for declarations of the browser JS.
const load = async <T>(path: string): Promise<T> => (await import(/* @vite-ignore */ path)) as T;
const sse = await load<SseModule>('./static/sse.js');
const tasks = await load<TasksModule>('./static/views/tasks.js');
const format = await load<FormatModule>('./static/format.js');
const api = await load<ApiModule>('./static/api.js');
const events = await load<EventsModule>('./static/views/events.js');

function parse(chunks: string[]): SseMessage[] {
  const messages: SseMessage[] = [];
  const parser = new sse.SseParser((message) => messages.push(message));
  for (const chunk of chunks) parser.push(chunk);
  return messages;
}

describe('SseParser', () => {
  it('parses events with names, ids, multi-line data and comments', () => {
    const text = ': keep-alive\n\nevent: output\nid: 7\ndata: {"a":1}\n\ndata: line one\ndata: line two\n\nevent: final\ndata:no space\n\n';
    expect(parse([text])).toEqual([
      { event: 'output', data: '{"a":1}', id: '7' },
      { event: 'message', data: 'line one\nline two', id: '7' },
      { event: 'final', data: 'no space', id: '7' },
    ]);
  });

  it('gives the same events however the stream is cut into chunks, CR LF pairs included', () => {
    const text = 'event: status\r\ndata: {"x":"é"}\r\n\r\nevent: output\rdata: two\r\rdata: three\n\n';
    const whole = parse([text]);
    expect(whole.map((message) => message.data)).toEqual(['{"x":"é"}', 'two', 'three']);
    for (let cut = 1; cut < text.length; cut += 1) {
      expect(parse([text.slice(0, cut), text.slice(cut)])).toEqual(whole);
    }
    expect(parse([...text])).toEqual(whole);
  });

  it('dispatches nothing for a block without data and keeps the retry hint', () => {
    const messages: SseMessage[] = [];
    const parser = new sse.SseParser((message) => messages.push(message));
    parser.push('event: lonely\n\nretry: 2500\n\nretry: soon\n\n');
    expect(messages).toEqual([]);
    expect(parser.retryMs).toBe(2500);
  });

  it('refuses a line without end past its bound, and drops an oversized event but not the next one', () => {
    const parser = new sse.SseParser(() => undefined);
    expect(() => parser.push('data: ' + 'x'.repeat(sse.sseLineLengthMax))).toThrow(sse.SseParseError);

    const messages: SseMessage[] = [];
    const bounded = new sse.SseParser((message) => messages.push(message));
    const line = `data: ${'y'.repeat(sse.sseLineLengthMax - 10)}\n`;
    const lines = Math.ceil(sse.sseEventLengthMax / (sse.sseLineLengthMax - 10)) + 1;
    for (let index = 0; index < lines; index += 1) bounded.push(line);
    bounded.push('\ndata: after\n\n');
    expect(messages).toEqual([{ event: 'message', data: 'after', id: null }]);
  });
});

describe('reconnectDelayMs', () => {
  it('grows from half a second, with jitter, and stays under its cap', () => {
    expect(sse.reconnectDelayMs(1, 0.5)).toBe(500);
    expect(sse.reconnectDelayMs(2, 0.5)).toBe(1000);
    expect(sse.reconnectDelayMs(1, 0)).toBe(400);
    expect(sse.reconnectDelayMs(1, 1)).toBe(600);
    for (const failures of [10, 50, 10_000]) expect(sse.reconnectDelayMs(failures, 1)).toBeLessThanOrEqual(sse.reconnectDelayMsMax * 1.2);
  });
});

describe('followEventStream', () => {
  let server: Server | null = null;
  afterEach(async () => {
    await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
    server = null;
  });

  async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
    server = createServer(handler);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`;
  }

  it('sends the header of the moment on every connection and reconnects after the stream ends', async () => {
    const seen: string[] = [];
    let connections = 0;
    const url = await serve((request, response) => {
      connections += 1;
      seen.push(String(request.headers.authorization));
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end(`event: hello\ndata: ${connections}\n\n`);
    });
    const controller = new AbortController();
    const messages: string[] = [];
    const problems: Array<number | null> = [];
    let token = 'first';
    await Promise.race([
      sse.followEventStream(url, () => ({ authorization: `Bearer ${token}` }), {
        onMessage: (message) => {
          messages.push(`${message.event}:${message.data}`);
          token = 'second';
          if (messages.length === 2) controller.abort();
        },
        onProblem: (problem) => problems.push(problem.retryInMs),
      }, controller.signal),
      new Promise((_resolve, reject) => setTimeout(() => reject(new Error('no reconnect within 5 s')), 5_000)),
    ]);
    expect(messages).toEqual(['hello:1', 'hello:2']);
    expect(seen).toEqual(['Bearer first', 'Bearer second']);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toBeGreaterThanOrEqual(400);
  });

  it('gives up on 401 with the server message, without retrying', async () => {
    let connections = 0;
    const url = await serve((_request, response) => {
      connections += 1;
      response.writeHead(401, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { code: 'unauthorized', message: 'the bearer token is not valid on this cluster' } }));
    });
    const problems: Array<{ message: string; retryInMs: number | null; status: number }> = [];
    await sse.followEventStream(url, () => ({}), { onMessage: () => undefined, onProblem: (problem) => problems.push(problem) }, new AbortController().signal);
    expect(connections).toBe(1);
    expect(problems).toEqual([{ message: 'the bearer token is not valid on this cluster', retryInMs: null, status: 401 }]);
  });

  it('drops a connection that goes silent and connects again', async () => {
    let connections = 0;
    const url = await serve((_request, response) => {
      connections += 1;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      // The first connection says one thing and then nothing more; the next ones end at once.
      response.write(`event: hello\ndata: ${connections}\n\n`);
      if (connections > 1) response.end();
    });
    const controller = new AbortController();
    const problems: string[] = [];
    const messages: string[] = [];
    await Promise.race([
      sse.followEventStream(url, () => ({}), {
        idleMs: 300,
        onMessage: (message) => {
          messages.push(message.data);
          if (messages.length === 2) controller.abort();
        },
        onProblem: (problem) => problems.push(problem.message),
      }, controller.signal),
      new Promise((_resolve, reject) => setTimeout(() => reject(new Error('the silent connection was not replaced within 5 s')), 5_000)),
    ]);
    expect(messages).toEqual(['1', '2']);
    expect(problems[0]).toMatch(/^no data from the node for 0 s/);
  });

  it('stops for good when shouldStop says the stream is complete', async () => {
    let connections = 0;
    const url = await serve((_request, response) => {
      connections += 1;
      response.writeHead(200, { 'content-type': 'text/event-stream' });
      response.end('event: final\ndata: {}\n\n');
    });
    let finished = false;
    await sse.followEventStream(url, () => ({}), { onMessage: () => { finished = true; }, shouldStop: () => finished }, new AbortController().signal);
    expect(connections).toBe(1);
  });
});

describe('LiveOutput', () => {
  it('appends in order, drops replayed chunks, notes gaps, and starts over for a new attempt', () => {
    const live = new tasks.LiveOutput();
    expect(live.accept({ attempt: 1, sequence: 0, text: 'a' })).toBe('appended');
    expect(live.accept({ attempt: 1, sequence: 1, text: 'b' })).toBe('appended');
    expect(live.accept({ attempt: 1, sequence: 1, text: 'b' })).toBe('ignored');
    expect(live.text).toBe('ab');
    expect(live.gap).toBe(false);
    live.accept({ attempt: 1, sequence: 3, text: 'd' });
    expect(live.gap).toBe(true);
    expect(live.accept({ attempt: 2, sequence: 0, text: 'x' })).toBe('restarted');
    expect(live.text).toBe('x');
    expect(live.gap).toBe(false);
    expect(live.accept({ attempt: 1, sequence: 4, text: 'late' })).toBe('ignored');
    expect(live.text).toBe('x');
  });

  it('keeps only the last part of an output past its bound', () => {
    const live = new tasks.LiveOutput();
    const chunk = 'z'.repeat(16 * 1024);
    const chunks = Math.ceil(tasks.liveOutputLengthMax / chunk.length) + 3;
    for (let sequence = 0; sequence < chunks; sequence += 1) live.accept({ attempt: 1, sequence, text: chunk });
    expect(live.text.length).toBe(tasks.liveOutputLengthMax);
    expect(live.cutFront).toBe(true);
  });
});

describe('fieldErrorsOf', () => {
  it('reads both shapes of 400 details and ignores anything else', () => {
    expect(api.fieldErrorsOf({ fields: [{ field: 'priority', reason: 'must be an integer from 0 to 10' }] }))
      .toEqual([{ field: 'priority', reason: 'must be an integer from 0 to 10' }]);
    expect(api.fieldErrorsOf([{ field: 'limit', reason: 'is invalid', extra: 1 }, { field: 3 }, null]))
      .toEqual([{ field: 'limit', reason: 'is invalid' }]);
    expect(api.fieldErrorsOf({ refusal: 'queue-full' })).toEqual([]);
    expect(api.fieldErrorsOf(undefined)).toEqual([]);
  });
});

describe('describeEvent', () => {
  it('summarises the daemon\'s cluster events in a line', () => {
    expect(events.describeEvent({ type: 'node.suspect', at: 1, nodeId: '12D3KooWAbcdefghijklmnop', name: 'atlas' }, '')).toBe('node atlas');
    expect(events.describeEvent({ type: 'leader.changed', at: 1, leaderId: null, term: 4 }, '')).toBe('no leader known · term 4');
    expect(events.describeEvent({ type: 'alert', at: 1, kind: 'second-cluster', message: 'another cluster shares this key' }, '')).toBe('another cluster shares this key');
    expect(events.describeEvent({ type: 'task.status', at: 1, event: { type: 'status', taskId: 't1', status: 'running', attempt: 1, node: 'n1', at: 1, reason: null } }, ''))
      .toBe('task t1 · node n1 · running');
    expect(events.describeEvent(null, 'not json at all')).toBe('not json at all');
    // Nodes are named as people know them when the page knows the name.
    expect(events.describeEvent({ type: 'leader.changed', at: 1, leaderId: '12D3KooWAbcdefghijklmnop', term: 5 }, '', new Map([['12D3KooWAbcdefghijklmnop', 'atlas']])))
      .toBe('leader atlas · term 5');
  });
});

describe('format', () => {
  it('prints sizes, durations and expiry for people', () => {
    expect(format.bytes(null)).toBe('–');
    expect(format.bytes(512)).toBe('512 B');
    expect(format.bytes(1.5 * 1024 ** 3)).toBe('1.5 GiB');
    expect(format.bytes(24 * 1024 ** 3)).toBe('24 GiB');
    expect(format.duration(850)).toBe('850 ms');
    expect(format.duration(4_200)).toBe('4.2 s');
    expect(format.duration(185_000)).toBe('3 min 5 s');
    expect(format.duration(2 * 3_600_000 + 600_000)).toBe('2 h 10 min');
    expect(format.ago(200)).toBe('just now');
    expect(format.expiresIn(null, 0)).toBe('never expires');
    expect(format.expiresIn(new Date(60_000).toISOString(), 0)).toBe('expires in 1 min');
    expect(format.expiresIn(new Date(0).toISOString(), 5_000)).toBe('expiring now');
    expect(format.expiresIn('2318-01-01T00:00:00Z', Date.UTC(2026, 0, 1))).toBe('never expires');
    expect(format.excerpt('  a\n  long   text here ', 9)).toBe('a long t…');
    expect(format.shortId('12D3KooWAbcdefghijklmnop')).toBe('12D3Ko…klmnop');
  });

  it('links only http and https URLs', () => {
    expect(format.safeHttpUrl('http://10.0.0.5:7420')).toBe('http://10.0.0.5:7420/');
    expect(format.safeHttpUrl('https://gpu.lan:7420/')).toBe('https://gpu.lan:7420/');
    expect(format.safeHttpUrl('javascript:alert(1)')).toBeNull();
    expect(format.safeHttpUrl('data:text/html,hi')).toBeNull();
    expect(format.safeHttpUrl('not a url')).toBeNull();
  });
});
