// Server-Sent Events over a fastify reply: takes the raw socket, writes `event:` and
// `data:` blocks as the source yields, a comment line every 15 s so proxies keep the
// connection open, and stops the source when the client goes away.
import type { FastifyReply, FastifyRequest } from 'fastify';

export interface SseMessage {
  event: string;
  data: unknown;
  id?: string;
}

const keepAliveMs = 15_000;
/** How often a stream checks that its token was not revoked (at the next event or keep-alive). */
const reauthorizeEveryMs = 1_000;

const revokedMessage = 'the token of this stream was revoked (or lost the role it needs); reconnect with a valid token';

/** The streams open on each HTTP server, so that a closing app can end them. */
const openStreams = new WeakMap<object, Set<AbortController>>();

/**
 * Ends every stream open on this server. A graceful stop waits for the requests in flight,
 * and an /api/events stream (an open dashboard) never ends by itself: the app calls this
 * when it begins to close (buildApp's preClose hook).
 */
export function endSseStreams(server: object): void {
  for (const controller of openStreams.get(server) ?? []) controller.abort();
}

export async function streamSse(request: FastifyRequest, reply: FastifyReply, source: (signal: AbortSignal) => AsyncIterable<SseMessage>): Promise<void> {
  const controller = new AbortController();
  const streams = openStreams.get(request.server.server) ?? new Set<AbortController>();
  openStreams.set(request.server.server, streams);
  streams.add(controller);
  const raw = reply.raw;
  reply.hijack();
  raw.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  raw.flushHeaders();
  const close = () => controller.abort();
  request.raw.once('close', close);
  raw.once('close', close);
  // A client that went away before the stream started (while the route awaited something,
  // such as the task lookup) has closed already, and no 'close' is coming.
  if (raw.destroyed || request.raw.destroyed) close();
  // A token revoked while its stream is open stops the stream too, as it would any request.
  let checkedAt = performance.now();
  const allowed = (): boolean => {
    if (request.stillAllowed === null || performance.now() - checkedAt < reauthorizeEveryMs) return true;
    checkedAt = performance.now();
    return request.stillAllowed();
  };
  const refuse = () => {
    raw.write(`event: error\ndata: ${JSON.stringify({ error: { code: 'unauthorized', message: revokedMessage } })}\n\n`);
    controller.abort();
  };
  const keepAlive = setInterval(() => {
    if (!allowed()) refuse();
    else raw.write(': keep-alive\n\n');
  }, keepAliveMs);
  try {
    for await (const message of source(controller.signal)) {
      if (controller.signal.aborted) break;
      if (!allowed()) {
        refuse();
        break;
      }
      const lines = [`event: ${message.event}`];
      if (message.id !== undefined) lines.push(`id: ${message.id}`);
      for (const line of JSON.stringify(message.data).split('\n')) lines.push(`data: ${line}`);
      const ok = raw.write(`${lines.join('\n')}\n\n`);
      if (!ok && !controller.signal.aborted) await drainedOrAborted(raw, controller.signal);
    }
  } catch (error) {
    if (!controller.signal.aborted) {
      raw.write(`event: error\ndata: ${JSON.stringify({ error: { code: 'internal', message: (error as Error).message } })}\n\n`);
    }
  } finally {
    streams.delete(controller);
    clearInterval(keepAlive);
    request.raw.off('close', close);
    raw.end();
  }
}

/**
 * Waits for the socket to drain, or for the stream to end: a client that goes away while
 * its buffer is full never drains, and waiting for 'drain' alone would hold the stream, its
 * keep-alive timer and its event subscription for the life of the node.
 */
function drainedOrAborted(raw: NodeJS.WritableStream, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      raw.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    raw.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
