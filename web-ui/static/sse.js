// Server-Sent Events over fetch. EventSource cannot send an Authorization header, so the
// dashboard reads the stream with fetch and parses it here (the WHATWG "event stream"
// rules: event/data/id/retry fields, comments, blank line dispatches), and reconnects
// with backoff when the stream breaks.

/** @typedef {{ event: string, data: string, id: string | null }} SseMessage */

/** A line without an end this long means a broken or hostile stream; parsing stops. */
export const sseLineLengthMax = 1024 * 1024;
/** One event's data (all its data lines) above this is dropped, not buffered without end. */
export const sseEventLengthMax = 4 * 1024 * 1024;

export class SseParseError extends Error {
  name = 'SseParseError';
}

/**
 * Incremental parser: feed it text chunks as they arrive; it calls onMessage for each
 * complete event. Chunks may split lines, and CR LF pairs, anywhere.
 */
export class SseParser {
  /** @param {(message: SseMessage) => void} onMessage */
  constructor(onMessage) {
    this.onMessage = onMessage;
    this.buffer = '';
    /** @type {string[]} */
    this.dataLines = [];
    this.dataLength = 0;
    this.eventName = '';
    /** @type {string | null} */
    this.lastEventId = null;
    /** @type {number | null} the server's requested reconnection delay */
    this.retryMs = null;
    this.skipLeadingNewline = false;
    this.oversized = false;
  }

  /** @param {string} chunk */
  push(chunk) {
    let text = chunk;
    // A CR at the end of the previous chunk already ended a line; its LF comes now.
    if (this.skipLeadingNewline && text.startsWith('\n')) text = text.slice(1);
    this.skipLeadingNewline = false;
    this.buffer += text;
    let start = 0;
    while (start < this.buffer.length) {
      const cr = this.buffer.indexOf('\r', start);
      const lf = this.buffer.indexOf('\n', start);
      let end;
      if (cr === -1 && lf === -1) break;
      if (cr === -1) end = lf;
      else if (lf === -1) end = cr;
      else end = Math.min(cr, lf);
      const line = this.buffer.slice(start, end);
      if (this.buffer[end] === '\r') {
        if (end + 1 < this.buffer.length) start = this.buffer[end + 1] === '\n' ? end + 2 : end + 1;
        else {
          start = end + 1;
          this.skipLeadingNewline = true;
        }
      } else start = end + 1;
      this.line(line);
    }
    this.buffer = this.buffer.slice(start);
    if (this.buffer.length > sseLineLengthMax) {
      throw new SseParseError(`an event-stream line is longer than ${sseLineLengthMax} characters`);
    }
  }

  /** @param {string} line */
  line(line) {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventName = value;
        break;
      case 'data':
        this.dataLength += value.length + 1;
        if (this.dataLength > sseEventLengthMax) this.oversized = true;
        else this.dataLines.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retryMs = Number(value);
        break;
      default:
        break;
    }
  }

  dispatch() {
    const hadData = this.dataLines.length > 0 || this.oversized;
    const message = { event: this.eventName || 'message', data: this.dataLines.join('\n'), id: this.lastEventId };
    const oversized = this.oversized;
    this.dataLines = [];
    this.dataLength = 0;
    this.eventName = '';
    this.oversized = false;
    if (!hadData || oversized) return;
    this.onMessage(message);
  }
}

/**
 * A connection that delivers nothing, not even the daemon's 15 s keep-alive comment, for
 * this long is dead (a laptop that slept, a NAT that forgot it) and is replaced.
 */
export const streamIdleMsMax = 45_000;

/** Backoff after a broken stream: 0.5 s, 1 s, 2 s ... capped at 15 s, with jitter so many tabs do not reconnect in step. */
export const reconnectDelayMsMin = 500;
export const reconnectDelayMsMax = 15_000;

/** @param {number} failures consecutive failed attempts, from 1 @param {number} [random] 0..1 */
export function reconnectDelayMs(failures, random = Math.random()) {
  const base = Math.min(reconnectDelayMsMax, reconnectDelayMsMin * 2 ** Math.max(0, Math.min(failures - 1, 16)));
  return Math.round(base * (0.8 + 0.4 * random));
}

/**
 * @typedef {object} StreamHandlers
 * @property {() => void} [onOpen] the stream is connected (again)
 * @property {(message: SseMessage) => void} onMessage
 * @property {(problem: { message: string, retryInMs: number | null, status: number }) => void} [onProblem]
 *   the stream broke; retryInMs null means it gives up (401, 403, 404, or `stop` said so)
 * @property {() => boolean} [shouldStop] checked after the stream ends normally: true ends it for good
 * @property {number} [idleMs] silence after which the connection counts as dead (default streamIdleMsMax)
 */

/**
 * Opens an event stream with fetch and keeps it open, reconnecting with backoff, until
 * `signal` aborts or the server refuses the request for good.
 * @param {string} url
 * @param {() => Record<string, string>} headers called for every connection, so a new token is used
 * @param {StreamHandlers} handlers
 * @param {AbortSignal} signal
 */
export async function followEventStream(url, headers, handlers, signal) {
  const idleMs = handlers.idleMs ?? streamIdleMsMax;
  let failures = 0;
  while (!signal.aborted) {
    let status = 0;
    let problem = '';
    // One controller per connection: ending it (idle, parse error, stop) frees the socket.
    const connection = new AbortController();
    const abortConnection = () => connection.abort();
    signal.addEventListener('abort', abortConnection, { once: true });
    let idle = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let idleTimer;
    const armIdleTimer = () => {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        idle = true;
        connection.abort();
      }, idleMs);
    };
    try {
      armIdleTimer();
      const response = await fetch(url, { headers: { accept: 'text/event-stream', ...headers() }, signal: connection.signal, cache: 'no-store' });
      status = response.status;
      if (!response.ok || response.body === null) {
        problem = await errorMessageOf(response);
        // These will not heal by waiting: the token or the resource is wrong.
        if (status === 401 || status === 403 || status === 404) {
          handlers.onProblem?.({ message: problem, retryInMs: null, status });
          return;
        }
      } else {
        failures = 0;
        handlers.onOpen?.();
        const parser = new SseParser(handlers.onMessage);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        try {
          while (true) {
            armIdleTimer();
            const { value, done } = await reader.read();
            if (done) break;
            parser.push(value);
          }
        } finally {
          reader.releaseLock();
        }
        if (handlers.shouldStop?.()) return;
        problem = 'the event stream ended';
      }
    } catch (error) {
      if (signal.aborted) return;
      if (idle) problem = `no data from the node for ${Math.round(idleMs / 1000)} s (it sends a keep-alive every 15 s), so the connection was dropped`;
      else if (error instanceof SseParseError) problem = error.message;
      else problem = `the node did not answer (${error instanceof Error ? error.message : String(error)})`;
    } finally {
      clearTimeout(idleTimer);
      signal.removeEventListener('abort', abortConnection);
      connection.abort();
    }
    if (signal.aborted) return;
    failures += 1;
    const delay = reconnectDelayMs(failures);
    handlers.onProblem?.({ message: problem, retryInMs: delay, status });
    await sleep(delay, signal);
  }
}

/** @param {Response} response */
async function errorMessageOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body.error?.message === 'string') return body.error.message;
  } catch {
    // Not JSON: fall through to the status line.
  }
  return `the node answered ${response.status} ${response.statusText}`.trim();
}

/** @param {number} ms @param {AbortSignal} signal */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(undefined);
    };
    // The listener goes when the timer fires, so a long-lived signal does not collect one per retry.
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
