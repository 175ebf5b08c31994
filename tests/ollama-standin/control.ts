// Drives a stand-in running in another process through its `/_standin/*` endpoints, for
// multi-process and LAN suites: the same knobs as the in-process handle, over HTTP.
import type { GenerationRecord, KnobScope, LoadedModelInfo } from './server.ts';
import type { StandinModelSpec } from './catalog.ts';

export interface StandinState {
  version: string;
  installed: string[];
  loaded: LoadedModelInfo[];
  running: number;
  queued: number;
  generationsTotal: number;
  embedRequests: number;
  knobs: Record<string, unknown>;
}

const controlTimeoutMs = 5_000;

export class StandinControl {
  readonly url: string;

  constructor(url: string) {
    this.url = url.replace(/\/+$/, '');
  }

  private async call<T>(method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.url}/_standin/${path}`, {
      method,
      body: body === undefined ? undefined : JSON.stringify(body),
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      signal: AbortSignal.timeout(controlTimeoutMs),
    });
    const payload = (await response.json()) as T & { error?: string };
    if (!response.ok) throw new Error(`stand-in at ${this.url} refused ${method} /_standin/${path}: ${payload.error ?? response.status}`);
    return payload;
  }

  state(): Promise<StandinState> {
    return this.call('GET', 'state');
  }

  async generations(): Promise<GenerationRecord[]> {
    return (await this.call<{ generations: GenerationRecord[] }>('GET', 'generations')).generations;
  }

  failNext(count: number, options: { status?: number; scope?: KnobScope } = {}): Promise<StandinState> {
    return this.call('POST', 'fail', { count, ...options });
  }

  hang(enabled: boolean, options: { scope?: KnobScope } = {}): Promise<StandinState> {
    return this.call('POST', 'hang', { enabled, ...options });
  }

  breakNext(count: number, afterTokens: number): Promise<StandinState> {
    return this.call('POST', 'break', { count, afterTokens });
  }

  setTokensPerSecond(tokensPerSecond: number, model?: string): Promise<StandinState> {
    return this.call('POST', 'speed', { tokensPerSecond, ...(model === undefined ? {} : { model }) });
  }

  setModels(models: ReadonlyArray<string | StandinModelSpec>): Promise<StandinState> {
    return this.call('POST', 'models', { models });
  }

  unload(model?: string): Promise<StandinState> {
    return this.call('POST', 'unload', model === undefined ? {} : { model });
  }

  reset(): Promise<StandinState> {
    return this.call('POST', 'reset', {});
  }
}
