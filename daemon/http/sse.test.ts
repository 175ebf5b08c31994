import { connect } from 'node:net';
import Fastify from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from './app.ts';
import type { HttpServices } from './services.ts';
import { streamSse } from './sse.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe('streamSse', () => {
  const closers: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const close of closers.splice(0)) await close();
  });

  // Found by the soak audit: a client that stopped reading (its socket buffers full) and
  // then went away left the stream waiting for a 'drain' that never comes, so the source
  // (for /api/events, an event-bus subscription counted against the 1,000 streams a node
  // takes) and the keep-alive timer were never released.
  it('ends the source when a client that stopped reading goes away', async () => {
    const app = Fastify();
    closers.push(() => app.close());
    app.decorateRequest('stillAllowed', null);
    let yielded = 0;
    let sourceEnded = false;
    app.get('/stream', async (request, reply) => {
      await streamSse(request, reply, async function* (signal) {
        try {
          while (!signal.aborted) {
            yielded += 1;
            yield { event: 'filler', data: 'x'.repeat(64 * 1024) };
            await sleep(1);
          }
        } finally {
          sourceEnded = true;
        }
      });
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };

    const socket = connect(port, '127.0.0.1', () => socket.write('GET /stream HTTP/1.1\r\nHost: test\r\n\r\n'));
    socket.pause(); // never read: the server's buffers fill and its writes wait for drain
    // Until the stream stalls: no message yielded for a while.
    let last = -1;
    await until('the stream to stall on a full socket', () => {
      const stalled = yielded > 0 && yielded === last;
      last = yielded;
      return stalled;
    }, 20_000);
    expect(sourceEnded).toBe(false);

    socket.destroy();
    await until('the source to end after the client left', () => sourceEnded, 3_000);
    expect(sourceEnded).toBe(true);
  });

  // Also found by the soak audit: a client that left while the route was still awaiting
  // something before the stream (GET /api/tasks/:id/events looks the task up first) had
  // closed already, so the stream never heard of it and its source ran on.
  it('ends the source when the client left before the stream started', async () => {
    const app = Fastify();
    closers.push(() => app.close());
    app.decorateRequest('stillAllowed', null);
    let routeReached = false;
    let sourceEnded = false;
    app.get('/stream', async (request, reply) => {
      routeReached = true;
      await sleep(300);
      await streamSse(request, reply, async function* (signal) {
        try {
          yield { event: 'hello', data: {} };
          if (!signal.aborted) await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        } finally {
          sourceEnded = true;
        }
      });
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };

    const socket = connect(port, '127.0.0.1', () => socket.write('GET /stream HTTP/1.1\r\nHost: test\r\n\r\n'));
    await until('the route to start', () => routeReached, 3_000);
    socket.destroy();
    await until('the source to end', () => sourceEnded, 3_000);
    expect(sourceEnded).toBe(true);
  });

  // Found by the client-compatibility audit: an open GET /api/events (a dashboard tab) held
  // a daemon's graceful stop for as long as it stayed open, since closing the app waits for
  // the requests in flight.
  it('ends the open streams when the app closes, so a stop does not wait for them', async () => {
    const app = await buildApp({ services: { nodeId: 'n', reportInternalError: () => undefined } as unknown as HttpServices });
    let sourceEnded = false;
    app.get('/stream', async (request, reply) => {
      await streamSse(request, reply, async function* (signal) {
        try {
          yield { event: 'hello', data: {} };
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
        } finally {
          sourceEnded = true;
        }
      });
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const { port } = app.server.address() as { port: number };
    const response = await fetch(`http://127.0.0.1:${port}/stream`);
    const reader = response.body!.getReader();
    await reader.read();
    const startedAt = Date.now();
    await Promise.race([app.close(), sleep(5_000).then(() => { throw new Error('app.close() waited for the open stream'); })]);
    expect(Date.now() - startedAt).toBeLessThan(2_000);
    expect(sourceEnded).toBe(true);
    // The client sees the stream end.
    while (!(await reader.read()).done) { /* the rest */ }
  }, 15_000);
});
