// The HTTP transport under the `ollama` client for generations: node:http on keep-alive
// connections to the local Ollama, shaped as the small part of `fetch` the client uses
// (status, headers, json/text, and a body read through getReader). At saturation the
// global fetch (undici, web streams, abort signals) was about 13 % of a daemon's CPU, for
// one local request per task. https URLs go through the global fetch.
import http from 'node:http';
import type { IncomingMessage } from 'node:http';

/** One connection pool per process: every generation (and the gateway) talks to the same Ollama. */
export const ollamaHttpAgent = new http.Agent({ keepAlive: true, maxSockets: 1_024 });

type FetchInit = NonNullable<Parameters<typeof fetch>[1]>;

/** What the client reads of a response body. */
interface BodyReader {
  read(): Promise<{ done: true; value: undefined } | { done: false; value: Uint8Array }>;
  releaseLock(): void;
  cancel(reason?: unknown): Promise<void>;
}

class LeanResponse {
  readonly ok: boolean;
  readonly status: number;
  readonly statusText: string;
  readonly headers: Headers;
  private readonly message: IncomingMessage;
  private used = false;

  constructor(message: IncomingMessage) {
    this.message = message;
    this.status = message.statusCode ?? 0;
    this.ok = this.status >= 200 && this.status < 300;
    this.statusText = message.statusMessage ?? '';
    const headers = new Headers();
    for (const [name, value] of Object.entries(message.headers)) {
      if (typeof value === 'string') headers.set(name, value);
      else if (Array.isArray(value)) for (const item of value) headers.append(name, item);
    }
    this.headers = headers;
  }

  get body(): { getReader(): BodyReader } {
    return { getReader: () => this.reader() };
  }

  private reader(): BodyReader {
    if (this.used) throw new TypeError('the response body was already read');
    this.used = true;
    const iterator = this.message[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    return {
      read: async () => {
        const next = await iterator.next();
        return next.done === true ? { done: true, value: undefined } : { done: false, value: next.value };
      },
      releaseLock: () => undefined,
      cancel: async (reason?: unknown) => {
        this.message.destroy(reason instanceof Error ? reason : undefined);
      },
    };
  }

  async text(): Promise<string> {
    const reader = this.reader();
    const chunks: Uint8Array[] = [];
    for (;;) {
      const next = await reader.read();
      if (next.done) break;
      chunks.push(next.value);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text()) as unknown;
  }
}

/** As fetch does: a failed connection is a TypeError whose cause is the system error. */
function fetchFailed(error: unknown): TypeError {
  return new TypeError('fetch failed', { cause: error });
}

function headerRecord(headers: FetchInit['headers']): Record<string, string> {
  if (headers === undefined) return {};
  if (headers instanceof Headers) {
    const record: Record<string, string> = {};
    headers.forEach((value, name) => { record[name] = value; });
    return record;
  }
  if (Array.isArray(headers)) return Object.fromEntries(headers);
  return { ...(headers as Record<string, string>) };
}

/**
 * A fetch for the `ollama` client over node:http. Honors `signal` (aborting the request, or
 * the body being read, with the signal's reason) and string bodies, which is all the client
 * sends; anything else goes to the global fetch.
 */
export function ollamaFetch(input: Parameters<typeof fetch>[0], init: FetchInit = {}): Promise<Response> {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (url.protocol !== 'http:' || (init.body !== undefined && init.body !== null && typeof init.body !== 'string')) return fetch(input, init);
  const signal = init.signal ?? null;
  if (signal?.aborted === true) return Promise.reject(signal.reason as Error);
  return new Promise<Response>((resolve, reject) => {
    const body = typeof init.body === 'string' ? init.body : null;
    const headers = headerRecord(init.headers);
    if (body !== null) headers['content-length'] = String(Buffer.byteLength(body));
    let message: IncomingMessage | null = null;
    const onAbort = () => {
      const reason = signal?.reason as Error;
      request.destroy(reason);
      message?.destroy(reason);
      reject(reason);
    };
    const request = http.request(url, { method: init.method ?? 'GET', headers, agent: ollamaHttpAgent }, (response) => {
      message = response;
      response.once('close', () => signal?.removeEventListener('abort', onAbort));
      resolve(new LeanResponse(response) as unknown as Response);
    });
    request.once('error', (error) => {
      signal?.removeEventListener('abort', onAbort);
      reject(signal?.aborted === true ? signal.reason as Error : fetchFailed(error));
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    request.end(body ?? undefined);
  });
}
