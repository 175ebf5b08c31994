// The CLI's HTTP client: finds the daemon (--url, HIVEMESH_URL, else the local one) and
// the token (--token, HIVEMESH_TOKEN, else the local admin token), and turns failures
// into sentences that say what to do.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultDataDir } from '../config.ts';

export class CliError extends Error {
  override name = 'CliError';
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.exitCode = exitCode;
  }
}

/**
 * No HTTP answer came from the daemon. `maybeSent`: the request may have reached it (the
 * connection broke or timed out after it opened), so a write may have been applied; false
 * when the connection was refused or the host not found, so nothing was sent.
 */
export class DaemonUnreachableError extends CliError {
  override name = 'DaemonUnreachableError';
  readonly maybeSent: boolean;
  /** Why, as the network said it (ECONNREFUSED, UND_ERR_SOCKET, TimeoutError...). */
  readonly network: string;
  constructor(message: string, cause: string, maybeSent: boolean) {
    super(message);
    this.network = cause;
    this.maybeSent = maybeSent;
  }
}

/** What a failed fetch says went wrong: the network's code (ECONNREFUSED, UND_ERR_SOCKET...), else its message or name. */
function networkCause(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).name;
}

/** Network failures that happen before a request leaves this machine. */
const notSentCauses = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

/**
 * An event stream that brings nothing for this long is given up: the daemon writes a
 * keep-alive every 15 s (daemon/http/sse.ts), so three missed ones mean it is stopped
 * (SIGSTOP, wedged) or cut off, and waiting on would wait for ever.
 */
export const streamIdleMsDefault = 45_000;

export interface ClientOptions {
  /** How long an event stream may bring nothing before it is given up; tests shorten it. */
  streamIdleMs?: number | undefined;
  url?: string | undefined;
  token?: string | undefined;
  dataDir?: string | undefined;
  env?: NodeJS.ProcessEnv;
}

export interface ApiResponse<T> {
  status: number;
  body: T;
  headers: Headers;
}

export class ApiClient {
  readonly url: string;
  private readonly token: string | null;
  private readonly tokenSource: string;
  private readonly streamIdleMs: number;

  constructor(options: ClientOptions = {}) {
    const env = options.env ?? process.env;
    this.streamIdleMs = options.streamIdleMs ?? streamIdleMsDefault;
    // Without --url or HIVEMESH_URL: the local daemon, on the API port it was given by environment.
    const localPort = /^\d{1,5}$/.test(env.HIVEMESH_API_PORT ?? '') ? env.HIVEMESH_API_PORT : '7420';
    this.url = (options.url ?? env.HIVEMESH_URL ?? `http://127.0.0.1:${localPort}`).replace(/\/+$/, '');
    let parsed: URL | null = null;
    try {
      parsed = new URL(this.url);
    } catch { /* said below */ }
    if (parsed === null || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      const source = options.url !== undefined ? '--url' : 'HIVEMESH_URL';
      throw new CliError(`${source} "${this.url}" is not an http(s) URL; give the daemon's address, e.g. http://127.0.0.1:7420`, 2);
    }
    const explicit = options.token ?? env.HIVEMESH_TOKEN;
    if (explicit !== undefined && explicit !== '') {
      this.token = explicit.trim();
      this.tokenSource = options.token !== undefined ? '--token' : 'HIVEMESH_TOKEN';
    } else {
      const dataDir = options.dataDir ?? env.HIVEMESH_DATA_DIR ?? defaultDataDir(env);
      const path = join(dataDir, 'admin.token');
      try {
        this.token = readFileSync(path, 'utf8').trim();
        this.tokenSource = path;
      } catch {
        this.token = null;
        this.tokenSource = path;
      }
    }
  }

  async request<T>(method: string, path: string, body?: unknown, init: { signal?: AbortSignal; accept?: number[] } = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.token !== null) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: Response;
    try {
      response = await fetch(this.url + path, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: init.signal ?? AbortSignal.timeout(30_000),
      });
    } catch (error) {
      const cause = networkCause(error);
      if (cause === 'TimeoutError') {
        throw new DaemonUnreachableError(`the daemon at ${this.url} did not answer within 30 s: it is overloaded or stopped, or the address is not a hivemesh daemon's. Try again, or ask another node with --url http://OTHER-NODE:7420 (its \`hivemesh nodes\` shows this one's state).`, cause, true);
      }
      throw new DaemonUnreachableError(`no hivemesh daemon answers at ${this.url} (${cause}). Start one with \`hivemesh start\`, or point at another with --url or HIVEMESH_URL.`, cause, !notSentCauses.has(cause));
    }
    const text = await response.text();
    let parsed: unknown = text;
    if ((response.headers.get('content-type') ?? '').includes('json') && text !== '') {
      try {
        parsed = JSON.parse(text);
      } catch {
        throw new CliError(`the daemon at ${this.url} answered ${response.status} with malformed JSON`);
      }
    }
    if (response.status >= 400 && !(init.accept ?? []).includes(response.status)) {
      const error = (parsed as { error?: { code?: string; message?: string } }).error;
      // Not hivemesh's error shape: most likely --url points at something else.
      let message = error?.message ?? `HTTP ${response.status} from ${this.url}${path}, which does not answer as a hivemesh daemon would; check --url / HIVEMESH_URL (a daemon's API is on port 7420 by default)`;
      if (response.status === 401) {
        message += this.token === null
          ? `\nNo token found: pass --token or set HIVEMESH_TOKEN (the admin token is in <data-dir>/admin.token; looked in ${this.tokenSource}).`
          : `\n(the token came from ${this.tokenSource})`;
      }
      const retryAfter = response.headers.get('retry-after');
      if (retryAfter !== null) message += ` (retry after ${retryAfter} s)`;
      throw new CliError(`error: ${message}`, response.status === 401 || response.status === 403 ? 3 : 1);
    }
    return { status: response.status, body: parsed as T, headers: response.headers };
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path).then((response) => response.body);
  }

  /** Opens a Server-Sent Events stream and yields parsed events until it ends or the signal fires. */
  async *events(path: string, signal?: AbortSignal): AsyncGenerator<{ event: string; data: unknown }> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.token !== null) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(this.url + path, { headers, signal: signal ?? null });
    } catch (error) {
      const cause = networkCause(error);
      throw new DaemonUnreachableError(`no hivemesh daemon answers at ${this.url}: ${(error as Error).message}`, cause, !notSentCauses.has(cause));
    }
    if (!response.ok || response.body === null) {
      const text = await response.text();
      let message = `HTTP ${response.status}`;
      try {
        message = (JSON.parse(text) as { error: { message: string } }).error.message;
      } catch { /* keep the status line */ }
      throw new CliError(`error: ${message}`);
    }
    const decoder = new TextDecoder();
    let buffer = '';
    const reader = response.body.getReader();
    while (true) {
      let timer: NodeJS.Timeout | undefined;
      const idle = new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), this.streamIdleMs); });
      const chunk = await Promise.race([reader.read(), idle]).finally(() => clearTimeout(timer));
      if (chunk === null) {
        void reader.cancel().catch(() => undefined);
        const why = `it sent nothing for ${this.streamIdleMs / 1_000} s, not even the keep-alive it sends every 15 s: stopped or cut off`;
        throw new DaemonUnreachableError(`the daemon at ${this.url} stopped its event stream: ${why}`, why, true);
      }
      const { done, value } = chunk;
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let boundary: number;
      while ((boundary = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, boundary);
        buffer = buffer.slice(boundary + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
        }
        if (data.length === 0) continue;
        const text = data.join('\n');
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch { /* plain text event */ }
        yield { event, data: parsed };
      }
    }
  }
}
