// An Ollama-compatible HTTP server without a GPU, for tests and demos: it answers Ollama's
// API shapes (tags, ps, show, generate, chat, embed, pull, delete, version, and the
// OpenAI-compatible /v1 endpoints) over real HTTP,
// streams deterministic tokens at a configured speed, simulates cold loads, keep-alive and
// VRAM, logs every generation, and has knobs (`/_standin/*` or the returned handle) to
// inject failures, hangs, cut connections and speed changes.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';
import {
  approximateTokenCount, normalizeModelName, renderChatPrompt, renderGeneratePrompt, resolveModelSpec,
  splitJsonTokens, standinEmbedding, standinJsonText, standinTokens,
  type StandinModel, type StandinModelSpec,
} from './catalog.ts';
import { StandinEventLog } from './events.ts';
import {
  RequestError, nativeOutput, openAiChatOutput, openAiCompletionOutput, openAiError, parseOpenAiChat, parseOpenAiCompletion,
  type GenerationOutput,
} from './formats.ts';

export interface StandinOptions {
  host?: string;
  /** 0 (default) picks a free port. */
  port?: number;
  models?: ReadonlyArray<string | StandinModelSpec>;
  /** Default generation speed; a model spec may set its own. */
  tokensPerSecond?: number;
  /** Delay before a model that is not loaded answers its first token. */
  coldLoadMs?: number;
  /** Keep-alive when a request does not say (Ollama: 5 minutes). */
  keepAliveMs?: number;
  /**
   * Generations and embeddings running at once, across all models; more wait, as with
   * OLLAMA_NUM_PARALLEL (which Ollama applies per model: one limit here keeps a host's
   * capacity one number, which is what hivemesh's concurrency limit models).
   */
  maxConcurrency?: number;
  /** Requests waiting for a slot before 503 (OLLAMA_MAX_QUEUE). */
  maxQueue?: number;
  /** Tokens of an answer when `options.num_predict` is not set. */
  responseTokens?: number;
  /** VRAM of the simulated GPU; 0 means a CPU-only host (size_vram 0). */
  vramBytes?: number;
  logFile?: string | null;
  version?: string;
  /** Generation records kept in memory; older ones are dropped (the total still counts). */
  generationsMax?: number;
}

export type GenerationOutcome = 'running' | 'completed' | 'aborted' | 'broken';

export interface GenerationRecord {
  id: number;
  /** Native /api/generate and /api/chat, or the OpenAI-compatible /v1 endpoints. */
  endpoint: 'generate' | 'chat' | 'openai-chat' | 'openai-completion';
  model: string;
  promptSha256: string;
  /** The rendered prompt, clipped to promptTextCharsMax characters. */
  promptText: string;
  stream: boolean;
  startedAt: number;
  finishedAt: number | null;
  coldLoad: boolean;
  aborted: boolean;
  outcome: GenerationOutcome;
  tokens: number;
  doneReason: string | null;
}

export interface LoadedModelInfo {
  name: string;
  sizeBytes: number;
  sizeVramBytes: number;
  /** ms since epoch, or null while the keep-alive is negative (never expires). */
  expiresAt: number | null;
  activeRequests: number;
}

/** Which requests a failure or hang knob applies to. */
export type KnobScope = 'generation' | 'all';

export interface Standin {
  readonly url: string;
  readonly port: number;
  readonly logFile: string | null;
  close(): Promise<void>;
  generations(): GenerationRecord[];
  /** Generations started since the server started, including those dropped from memory. */
  generationsTotal(): number;
  embedRequests(): number;
  loadedModels(): LoadedModelInfo[];
  installedModels(): string[];
  setModels(models: ReadonlyArray<string | StandinModelSpec>): void;
  failNext(count: number, options?: { status?: number; scope?: KnobScope }): void;
  hang(enabled: boolean, options?: { scope?: KnobScope }): void;
  /** Cut the connection of the next `count` generations after `afterTokens` tokens. */
  breakNext(count: number, afterTokens: number): void;
  setTokensPerSecond(tokensPerSecond: number, model?: string): void;
  unload(model?: string): void;
  /** Clears every knob (failures, hang, breaks, speed overrides). */
  reset(): void;
}

/** What a generation needs, whichever endpoint and format asked for it. */
interface GenerationSpec {
  endpoint: GenerationRecord['endpoint'];
  model: StandinModel;
  promptText: string;
  keepAliveMs: number | null;
  numPredict: number | null;
  stops: string[];
  /** Ollama's `format`: "json" or a JSON schema; empty for text. */
  format: unknown;
  stream: boolean;
  receivedAt: bigint;
}

export const promptTextCharsMax = 2048;
const requestBodyBytesMax = 8 * 1024 * 1024;
const tokensPerRequestMax = 100_000;
const embedInputsMax = 2048;
// Ollama reports a negative keep-alive as now + the largest Go duration (about 292 years).
const foreverMs = 9_223_372_036_854;

class BusyError extends Error {
  override name = 'BusyError';
}

class AbortedError extends Error {
  override name = 'AbortedError';
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new AbortedError('aborted'));
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortedError('aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Waits for a promise, or rejects as soon as the signal aborts (the promise runs on). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new AbortedError('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortedError('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => { signal.removeEventListener('abort', onAbort); resolve(value); },
      (error: unknown) => { signal.removeEventListener('abort', onAbort); reject(error); },
    );
  });
}

/** Concurrency slots with a bounded wait queue, like Ollama's scheduler. */
class Slots {
  active = 0;
  limit: number;
  queueMax: number;
  private readonly waiters: Array<{ grant: () => void; signal: AbortSignal; onAbort: () => void }> = [];

  constructor(limit: number, queueMax: number) {
    this.limit = limit;
    this.queueMax = queueMax;
  }

  get queued(): number {
    return this.waiters.length;
  }

  acquire(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(new AbortedError('aborted'));
    if (this.active < this.limit) {
      this.active++;
      return Promise.resolve();
    }
    if (this.waiters.length >= this.queueMax) {
      return Promise.reject(new BusyError('server busy, please try again.  maximum pending requests exceeded'));
    }
    return new Promise((resolve, reject) => {
      const waiter = {
        signal,
        grant: () => {
          signal.removeEventListener('abort', waiter.onAbort);
          resolve();
        },
        onAbort: () => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          reject(new AbortedError('aborted'));
        },
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(): void {
    const next = this.waiters.shift();
    // The slot passes straight to the next waiter, so `active` stays the same.
    if (next !== undefined) next.grant();
    else this.active--;
  }
}

interface LoadedState {
  model: StandinModel;
  sizeVram: number;
  lastUsedMs: number;
  active: number;
  /** Keep-alive of the latest request, null for never. */
  keepAliveMs: number | null;
  expiresAtMs: number | null;
  timer: NodeJS.Timeout | null;
}

/**
 * Ollama's keep_alive: a number is seconds, a string is a Go duration ("5m", "1h30m",
 * "300ms") or a number of seconds; negative means never unload. Returns ms, null for
 * never, undefined when absent. Throws RequestError on anything else.
 */
export function parseKeepAlive(value: unknown): number | null | undefined {
  if (value === undefined || value === null) return undefined;
  let seconds: number;
  if (typeof value === 'number' && Number.isFinite(value)) seconds = value;
  else if (typeof value === 'string' && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) seconds = Number(value);
  else if (typeof value === 'string') {
    const match = /^([-+]?)((?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+)$/.exec(value.trim());
    if (match === null) throw new RequestError(400, `time: invalid duration "${value}"`);
    const unitMs: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
    let total = 0;
    for (const part of (match[2] ?? '').matchAll(/(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)/g)) {
      total += Number(part[1]) * (unitMs[part[2] ?? 's'] ?? 1000);
    }
    seconds = (match[1] === '-' ? -total : total) / 1000;
  } else {
    throw new RequestError(400, `invalid keep_alive ${JSON.stringify(value)}: use seconds or a duration such as "5m"`);
  }
  return seconds < 0 ? null : Math.round(seconds * 1000);
}

/** Drops a connection mid-answer, as a crashing Ollama would, after what was written is sent. */
function cutConnection(response: http.ServerResponse): void {
  if (response.socket !== null) response.socket.destroySoon();
  else response.destroy();
}

function sendJson(response: http.ServerResponse, status: number, body: unknown): void {
  if (response.headersSent || response.destroyed) return;
  const text = JSON.stringify(body);
  response.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  response.end(text);
}

function sendError(response: http.ServerResponse, status: number, message: string): void {
  sendJson(response, status, { error: message });
}

async function readJsonBody(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > requestBodyBytesMax) throw new RequestError(413, `request body is over ${requestBodyBytesMax} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new RequestError(400, `invalid JSON body: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new RequestError(400, 'request body must be a JSON object');
  return value as Record<string, unknown>;
}

function positiveNumber(name: string, value: number): number {
  if (!Number.isFinite(value) || value <= 0) throw new Error(`stand-in option ${name} must be a positive number, got ${value}`);
  return value;
}

function nonNegativeNumber(name: string, value: number): number {
  if (!Number.isFinite(value) || value < 0) throw new Error(`stand-in option ${name} must be zero or more, got ${value}`);
  return value;
}

export async function startStandin(options: StandinOptions = {}): Promise<Standin> {
  const host = options.host ?? '127.0.0.1';
  const defaultTokensPerSecond = positiveNumber('tokensPerSecond', options.tokensPerSecond ?? 50);
  const defaultColdLoadMs = nonNegativeNumber('coldLoadMs', options.coldLoadMs ?? 300);
  const defaultKeepAliveMs = nonNegativeNumber('keepAliveMs', options.keepAliveMs ?? 5 * 60_000);
  const responseTokens = positiveNumber('responseTokens', options.responseTokens ?? 24);
  const vramBytes = nonNegativeNumber('vramBytes', options.vramBytes ?? 24 * 1024 ** 3);
  const generationsMax = positiveNumber('generationsMax', options.generationsMax ?? 10_000);
  const version = options.version ?? '0.12.6';
  const slots = new Slots(positiveNumber('maxConcurrency', options.maxConcurrency ?? 4), nonNegativeNumber('maxQueue', options.maxQueue ?? 512));
  const eventLog = new StandinEventLog(options.logFile ?? null);
  const modifiedAt = new Date().toISOString();

  const models = new Map<string, StandinModel>();
  const loaded = new Map<string, LoadedState>();
  const loading = new Map<string, Promise<void>>();
  const records: GenerationRecord[] = [];
  let generationsStarted = 0;
  let embedCount = 0;
  let openAiResponses = 0;
  let closed = false;

  const knobs = {
    failRemaining: 0,
    failStatus: 500,
    failScope: 'generation' as KnobScope,
    hangScope: null as KnobScope | null,
    breakRemaining: 0,
    breakAfterTokens: 0,
    speedOverride: null as number | null,
    speedByModel: new Map<string, number>(),
  };

  const setModels = (list: ReadonlyArray<string | StandinModelSpec>) => {
    const next = new Map<string, StandinModel>();
    for (const entry of list) {
      const model = resolveModelSpec(entry);
      next.set(model.name, model);
    }
    models.clear();
    for (const [name, model] of next) models.set(name, model);
    for (const name of [...loaded.keys()]) if (!models.has(name)) unloadModel(name, 'removed');
  };

  const tokensPerSecondOf = (model: StandinModel) =>
    knobs.speedByModel.get(model.name) ?? knobs.speedOverride ?? model.tokensPerSecond ?? defaultTokensPerSecond;

  const usedVram = () => [...loaded.values()].reduce((sum, state) => sum + state.sizeVram, 0);

  function unloadModel(name: string, reason: string): void {
    const state = loaded.get(name);
    if (state === undefined) return;
    if (state.timer !== null) clearTimeout(state.timer);
    loaded.delete(name);
    eventLog.write({ event: 'unload', model: name, reason });
  }

  // Called when a request on a model ends: the keep-alive of that request decides.
  function scheduleExpiry(state: LoadedState): void {
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
    if (state.active > 0) return;
    if (state.keepAliveMs === null) {
      state.expiresAtMs = null;
      return;
    }
    if (state.keepAliveMs === 0) {
      unloadModel(state.model.name, 'keep_alive 0');
      return;
    }
    state.expiresAtMs = Date.now() + state.keepAliveMs;
    state.timer = setTimeout(() => {
      if (loaded.get(state.model.name) === state && state.active === 0) unloadModel(state.model.name, 'keep-alive expired');
    }, state.keepAliveMs);
    state.timer.unref();
  }

  /** Loads a model (sharing one cold load among concurrent requests); returns the load time in ns. */
  async function ensureLoaded(model: StandinModel, keepAliveMs: number | null, signal: AbortSignal): Promise<{ loadNs: number; cold: boolean }> {
    const started = process.hrtime.bigint();
    let cold = false;
    while (!loaded.has(model.name)) {
      cold = true;
      let pending = loading.get(model.name);
      if (pending === undefined) {
        const delayMs = model.coldLoadMs ?? defaultColdLoadMs;
        // The load itself is not tied to one request: others may be waiting on it.
        pending = new Promise<void>((resolve) => setTimeout(resolve, delayMs).unref()).then(() => {
          loading.delete(model.name);
          if (closed || !models.has(model.name)) return;
          // Make room the way Ollama does: evict idle models, least recently used first.
          const idle = [...loaded.values()].filter((state) => state.active === 0).sort((a, b) => a.lastUsedMs - b.lastUsedMs);
          while (vramBytes > 0 && usedVram() + model.sizeBytes > vramBytes && idle.length > 0) {
            const victim = idle.shift();
            if (victim !== undefined) unloadModel(victim.model.name, 'evicted for ' + model.name);
          }
          const sizeVram = Math.max(0, Math.min(model.sizeBytes, vramBytes - usedVram()));
          const state: LoadedState = { model, sizeVram, lastUsedMs: Date.now(), active: 0, keepAliveMs: defaultKeepAliveMs, expiresAtMs: null, timer: null };
          loaded.set(model.name, state);
          eventLog.write({ event: 'load', model: model.name, sizeVramBytes: sizeVram, loadMs: delayMs });
          // Expires like any idle model should every request waiting for it have gone away;
          // a request that takes it clears the timer.
          scheduleExpiry(state);
        });
        loading.set(model.name, pending);
      }
      await untilAborted(pending, signal);
      if (closed) throw new AbortedError('stand-in closed');
      if (!models.has(model.name)) throw new RequestError(404, `model "${model.name}" not found, try pulling it first`);
    }
    const state = loaded.get(model.name);
    if (state === undefined) throw new AbortedError('model unloaded while starting');
    state.active++;
    state.lastUsedMs = Date.now();
    state.keepAliveMs = keepAliveMs;
    if (state.timer !== null) clearTimeout(state.timer);
    state.timer = null;
    return { loadNs: Number(process.hrtime.bigint() - started), cold };
  }

  function releaseModel(model: StandinModel, keepAliveMs: number | null): void {
    const state = loaded.get(model.name);
    if (state === undefined) return;
    state.active = Math.max(0, state.active - 1);
    state.lastUsedMs = Date.now();
    state.keepAliveMs = keepAliveMs;
    scheduleExpiry(state);
  }

  function findModel(body: Record<string, unknown>): StandinModel {
    const name = typeof body.model === 'string' && body.model !== '' ? body.model : typeof body.name === 'string' ? body.name : '';
    if (name === '') throw new RequestError(400, 'model is required');
    const model = models.get(normalizeModelName(name));
    if (model === undefined) throw new RequestError(404, `model "${name}" not found, try pulling it first`);
    return model;
  }

  function detailsOf(model: StandinModel) {
    return { parent_model: '', format: 'gguf', family: model.family, families: [model.family], parameter_size: model.parameterSize, quantization_level: model.quantization };
  }

  function pushRecord(record: GenerationRecord): void {
    records.push(record);
    if (records.length > generationsMax) records.splice(0, records.length - generationsMax);
  }

  /** Abort signal of a request: fires when the client goes away before the answer ends. */
  function disconnectSignal(response: http.ServerResponse): AbortSignal {
    const controller = new AbortController();
    response.on('close', () => {
      if (!response.writableFinished) controller.abort();
    });
    return controller.signal;
  }

  async function writeText(response: http.ServerResponse, text: string, signal: AbortSignal): Promise<void> {
    if (response.write(text)) return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new AbortedError('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      response.once('drain', () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** Parses a native /api/generate or /api/chat body; answers load-only requests itself. */
  async function handleNative(kind: 'generate' | 'chat', body: Record<string, unknown>, response: http.ServerResponse): Promise<void> {
    const receivedAt = process.hrtime.bigint();
    const model = findModel(body);
    if (model.embedding) throw new RequestError(400, `"${model.name}" does not support ${kind}`);
    // A request without keep_alive sets the default again, as in Ollama.
    const parsedKeepAlive = parseKeepAlive(body.keep_alive);
    const keepAliveMs = parsedKeepAlive === undefined ? defaultKeepAliveMs : parsedKeepAlive;
    const requestOptions = (typeof body.options === 'object' && body.options !== null ? body.options : {}) as Record<string, unknown>;
    const stream = body.stream !== false;
    let promptText: string;
    let empty: boolean;
    if (kind === 'generate') {
      if (body.prompt !== undefined && typeof body.prompt !== 'string') throw new RequestError(400, 'prompt must be a string');
      if (body.system !== undefined && typeof body.system !== 'string') throw new RequestError(400, 'system must be a string');
      promptText = renderGeneratePrompt({ prompt: body.prompt as string | undefined, system: body.system as string | undefined, raw: body.raw === true });
      empty = (body.prompt ?? '') === '';
    } else {
      const messages = body.messages ?? [];
      if (!Array.isArray(messages) || !messages.every((message) => typeof message === 'object' && message !== null && typeof message.role === 'string' && typeof (message.content ?? '') === 'string')) {
        throw new RequestError(400, 'messages must be an array of {role, content} objects');
      }
      promptText = renderChatPrompt(messages.map((message: { role: string; content?: string }) => ({ role: message.role, content: message.content ?? '' })));
      empty = messages.length === 0;
    }
    const output = nativeOutput(kind, model.name, stream);

    // Ollama answers an empty prompt by loading (or, with keep_alive 0, unloading) the model.
    if (empty) {
      const emptyPiece = kind === 'generate' ? { response: '' } : { message: { role: 'assistant', content: '' } };
      if (keepAliveMs === 0) {
        unloadModel(model.name, 'keep_alive 0');
        sendJson(response, 200, { model: model.name, created_at: new Date().toISOString(), ...emptyPiece, done: true, done_reason: 'unload' });
        return;
      }
      await ensureLoaded(model, keepAliveMs, disconnectSignal(response));
      releaseModel(model, keepAliveMs);
      sendJson(response, 200, { model: model.name, created_at: new Date().toISOString(), ...emptyPiece, done: true, done_reason: 'load' });
      return;
    }
    const numPredict = typeof requestOptions.num_predict === 'number' ? Math.floor(requestOptions.num_predict) : null;
    const stops = Array.isArray(requestOptions.stop) ? requestOptions.stop.filter((stop): stop is string => typeof stop === 'string' && stop !== '') : [];
    await runGeneration({ endpoint: kind, model, promptText, keepAliveMs, numPredict, stops, format: body.format, stream, receivedAt }, response, output);
  }

  /** An OpenAI-compatible /v1/chat/completions or /v1/completions request, as Ollama serves it. */
  async function handleOpenAi(kind: 'chat' | 'completion', body: Record<string, unknown>, response: http.ServerResponse): Promise<void> {
    const receivedAt = process.hrtime.bigint();
    const request = kind === 'chat' ? parseOpenAiChat(body) : parseOpenAiCompletion(body);
    const model = findModel(body);
    if (model.embedding) throw new RequestError(400, `"${model.name}" does not support ${kind === 'chat' ? 'chat' : 'generate'}`);
    const output = kind === 'chat'
      ? openAiChatOutput(model.name, request.stream, request.includeUsage, ++openAiResponses)
      : openAiCompletionOutput(model.name, request.stream, request.includeUsage, ++openAiResponses);
    await runGeneration({
      endpoint: kind === 'chat' ? 'openai-chat' : 'openai-completion', model, promptText: request.promptText, keepAliveMs: defaultKeepAliveMs,
      numPredict: request.maxTokens, stops: request.stops, format: request.format, stream: request.stream, receivedAt,
    }, response, output);
  }

  /** The tokens of an answer: deterministic text or JSON, cut by num_predict and stop. */
  function answerTokens(spec: GenerationSpec): { tokens: string[]; doneReason: string } {
    let tokens: string[];
    let doneReason = 'stop';
    const limit = spec.numPredict !== null && spec.numPredict > 0 ? Math.min(spec.numPredict, tokensPerRequestMax) : null;
    if (spec.format !== undefined && spec.format !== null && spec.format !== '') {
      tokens = splitJsonTokens(standinJsonText(spec.model.name, spec.promptText, spec.format));
      if (limit !== null && limit < tokens.length) {
        tokens = tokens.slice(0, limit);
        doneReason = 'length';
      }
    } else if (limit !== null) {
      // With a token limit the answer runs to it, as a long answer cut off would.
      tokens = standinTokens(spec.model.name, spec.promptText, limit);
      doneReason = 'length';
    } else {
      tokens = standinTokens(spec.model.name, spec.promptText, responseTokens);
    }
    if (spec.stops.length > 0) {
      let text = '';
      for (let index = 0; index < tokens.length; index++) {
        const candidate = text + tokens[index];
        const hit = spec.stops.map((stop) => candidate.indexOf(stop)).filter((at) => at >= 0).sort((a, b) => a - b)[0];
        if (hit !== undefined) {
          const cut = candidate.slice(text.length, hit);
          tokens = [...tokens.slice(0, index), ...(cut === '' ? [] : [cut])];
          doneReason = 'stop';
          break;
        }
        text = candidate;
      }
    }
    return { tokens, doneReason };
  }

  /** One generation: a slot, the model loaded, tokens at the model's speed, logged throughout. */
  async function runGeneration(spec: GenerationSpec, response: http.ServerResponse, output: GenerationOutput): Promise<void> {
    const { model } = spec;
    const signal = disconnectSignal(response);
    await slots.acquire(signal).catch((error: unknown) => {
      if (error instanceof BusyError) throw new RequestError(503, error.message);
      throw error;
    });
    const id = ++generationsStarted;
    const record: GenerationRecord = {
      id, endpoint: spec.endpoint, model: model.name,
      promptSha256: createHash('sha256').update(spec.promptText).digest('hex'),
      promptText: spec.promptText.slice(0, promptTextCharsMax),
      stream: spec.stream, startedAt: Date.now(), finishedAt: null, coldLoad: !loaded.has(model.name),
      aborted: false, outcome: 'running', tokens: 0, doneReason: null,
    };
    pushRecord(record);
    eventLog.write({ event: 'start', id, model: model.name, endpoint: spec.endpoint, promptSha256: record.promptSha256, stream: spec.stream, coldLoad: record.coldLoad });
    let modelHeld = false;
    let breakAfter: number | null = null;
    if (knobs.breakRemaining > 0) {
      knobs.breakRemaining--;
      breakAfter = knobs.breakAfterTokens;
    }
    const end = (outcome: GenerationOutcome, doneReason: string | null) => {
      if (record.outcome !== 'running') return;
      record.outcome = outcome;
      record.aborted = outcome === 'aborted' || outcome === 'broken';
      record.finishedAt = Date.now();
      record.doneReason = doneReason;
      eventLog.write({ event: outcome === 'completed' ? 'finish' : outcome === 'broken' ? 'break' : 'abort', id, model: model.name, tokens: record.tokens, ...(doneReason === null ? {} : { doneReason }) });
    };
    try {
      const load = await ensureLoaded(model, spec.keepAliveMs, signal);
      modelHeld = true;
      // Prompt evaluation is about twenty times faster than generation on real hardware.
      const promptEvalCount = approximateTokenCount(spec.promptText);
      const promptStarted = process.hrtime.bigint();
      await sleep((promptEvalCount / (tokensPerSecondOf(model) * 20)) * 1000, signal);
      const promptEvalNs = Number(process.hrtime.bigint() - promptStarted);
      const { tokens, doneReason } = answerTokens(spec);

      if (spec.stream) response.writeHead(200, { 'Content-Type': output.contentType, 'Cache-Control': 'no-cache' });
      const evalStarted = process.hrtime.bigint();
      let nextDueMs = performance.now();
      let tokensSinceYield = 0;
      let text = '';
      while (record.tokens < tokens.length) {
        if (breakAfter !== null && record.tokens >= breakAfter) {
          end('broken', null);
          cutConnection(response);
          return;
        }
        nextDueMs += 1000 / tokensPerSecondOf(model);
        const waitMs = nextDueMs - performance.now();
        if (waitMs >= 1) {
          await sleep(waitMs, signal);
          tokensSinceYield = 0;
        } else if (++tokensSinceYield >= 32) {
          // Very high speeds need no timer per token, but other requests still get their turn.
          await new Promise<void>((resolve) => setImmediate(resolve));
          tokensSinceYield = 0;
        }
        if (signal.aborted) throw new AbortedError('aborted');
        const token = tokens[record.tokens] ?? '';
        text += token;
        record.tokens++;
        if (spec.stream) await writeText(response, output.chunk(token), signal);
      }
      if (breakAfter !== null && record.tokens >= breakAfter) {
        end('broken', null);
        cutConnection(response);
        return;
      }
      const closing = output.end({
        text, doneReason, promptEvalCount, promptEvalNs, evalCount: record.tokens,
        evalNs: Number(process.hrtime.bigint() - evalStarted), loadNs: load.loadNs,
        totalNs: Number(process.hrtime.bigint() - spec.receivedAt),
      });
      // Logged before the answer leaves, so a client that has its answer finds the event.
      end('completed', doneReason);
      if (spec.stream) {
        await writeText(response, closing, signal);
        response.end();
      } else {
        response.writeHead(200, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(closing) });
        response.end(closing);
      }
    } catch (error) {
      end('aborted', null);
      if (!(error instanceof AbortedError)) throw error;
    } finally {
      if (modelHeld) releaseModel(model, spec.keepAliveMs);
      slots.release();
    }
  }

  /** Embeds inputs through a slot and a loaded model; null when the client went away. */
  async function embedInputs(model: StandinModel, inputs: string[], dimensions: number, keepAliveMs: number | null, response: http.ServerResponse): Promise<{ embeddings: number[][]; promptEvalCount: number; loadNs: number } | null> {
    if (inputs.length > embedInputsMax) throw new RequestError(400, `too many inputs: ${inputs.length}, at most ${embedInputsMax}`);
    const signal = disconnectSignal(response);
    await slots.acquire(signal).catch((error: unknown) => {
      if (error instanceof BusyError) throw new RequestError(503, error.message);
      throw error;
    });
    let modelHeld = false;
    try {
      const load = await ensureLoaded(model, keepAliveMs, signal);
      modelHeld = true;
      const promptEvalCount = inputs.reduce((sum, input) => sum + approximateTokenCount(input), 0);
      await sleep((promptEvalCount / (tokensPerSecondOf(model) * 20)) * 1000, signal);
      embedCount++;
      eventLog.write({ event: 'embed', model: model.name, inputs: inputs.length });
      return { embeddings: inputs.map((input) => standinEmbedding(model.name, input, dimensions)), promptEvalCount, loadNs: load.loadNs };
    } catch (error) {
      if (error instanceof AbortedError) return null;
      throw error;
    } finally {
      if (modelHeld) releaseModel(model, keepAliveMs);
      slots.release();
    }
  }

  async function handleEmbed(legacy: boolean, body: Record<string, unknown>, response: http.ServerResponse): Promise<void> {
    const receivedAt = process.hrtime.bigint();
    const model = findModel(body);
    const parsedKeepAlive = parseKeepAlive(body.keep_alive);
    const keepAliveMs = parsedKeepAlive === undefined ? defaultKeepAliveMs : parsedKeepAlive;
    const rawInput = legacy ? body.prompt : body.input;
    const inputs = typeof rawInput === 'string' ? [rawInput] : Array.isArray(rawInput) && rawInput.every((entry) => typeof entry === 'string') ? (rawInput as string[]) : null;
    if (inputs === null) throw new RequestError(400, legacy ? 'prompt must be a string' : 'invalid input type: input must be a string or an array of strings');
    let dimensions = model.embeddingLength;
    if (!legacy && body.dimensions !== undefined) {
      if (typeof body.dimensions !== 'number' || !Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > model.embeddingLength) {
        throw new RequestError(400, `dimensions must be an integer between 1 and ${model.embeddingLength}`);
      }
      dimensions = body.dimensions;
    }
    const result = await embedInputs(model, inputs, dimensions, keepAliveMs, response);
    if (result === null) return;
    if (legacy) {
      sendJson(response, 200, { embedding: result.embeddings[0] ?? [] });
      return;
    }
    sendJson(response, 200, {
      model: model.name,
      embeddings: result.embeddings,
      total_duration: Number(process.hrtime.bigint() - receivedAt),
      load_duration: result.loadNs,
      prompt_eval_count: result.promptEvalCount,
    });
  }

  function openAiModel(model: StandinModel) {
    return { id: model.name, object: 'model', created: Math.floor(Date.parse(modifiedAt) / 1000), owned_by: 'library' };
  }

  async function handleOpenAiEmbeddings(body: Record<string, unknown>, response: http.ServerResponse): Promise<void> {
    const input = body.input;
    const inputs = typeof input === 'string' ? [input] : Array.isArray(input) && input.every((entry) => typeof entry === 'string') ? (input as string[]) : null;
    if (inputs === null) throw new RequestError(400, 'invalid input type: input must be a string or an array of strings');
    const model = findModel(body);
    const result = await embedInputs(model, inputs, model.embeddingLength, defaultKeepAliveMs, response);
    if (result === null) return;
    sendJson(response, 200, {
      object: 'list',
      data: result.embeddings.map((embedding, index) => ({ object: 'embedding', embedding, index })),
      model: model.name,
      usage: { prompt_tokens: result.promptEvalCount, total_tokens: result.promptEvalCount },
    });
  }

  async function handlePull(body: Record<string, unknown>, response: http.ServerResponse): Promise<void> {
    const name = typeof body.model === 'string' && body.model !== '' ? body.model : typeof body.name === 'string' ? body.name : '';
    if (name === '') throw new RequestError(400, 'model is required');
    const model = resolveModelSpec(name);
    models.set(model.name, models.get(model.name) ?? model);
    eventLog.write({ event: 'pull', model: model.name });
    const steps = [
      { status: 'pulling manifest' },
      { status: `pulling ${model.digest.slice(0, 12)}`, digest: `sha256:${model.digest}`, total: model.sizeBytes, completed: model.sizeBytes },
      { status: 'verifying sha256 digest' },
      { status: 'writing manifest' },
      { status: 'success' },
    ];
    if (body.stream === false) return sendJson(response, 200, { status: 'success' });
    response.writeHead(200, { 'Content-Type': 'application/x-ndjson' });
    for (const step of steps) response.write(JSON.stringify(step) + '\n');
    response.end();
  }

  function psModels() {
    const now = Date.now();
    return [...loaded.values()].map((state) => {
      const expiresAtMs = state.keepAliveMs === null ? now + foreverMs : state.active > 0 ? now + state.keepAliveMs : state.expiresAtMs ?? now + foreverMs;
      return {
        name: state.model.name, model: state.model.name, size: state.model.sizeBytes, digest: state.model.digest,
        details: detailsOf(state.model), expires_at: new Date(expiresAtMs).toISOString(), size_vram: state.sizeVram,
        context_length: state.model.contextLength,
      };
    });
  }

  function snapshot() {
    return {
      version,
      installed: [...models.keys()],
      loaded: loadedModels(),
      running: slots.active,
      queued: slots.queued,
      generationsTotal: generationsStarted,
      embedRequests: embedCount,
      knobs: {
        failRemaining: knobs.failRemaining, failStatus: knobs.failStatus, failScope: knobs.failScope, hangScope: knobs.hangScope,
        breakRemaining: knobs.breakRemaining, breakAfterTokens: knobs.breakAfterTokens,
        tokensPerSecond: knobs.speedOverride, tokensPerSecondByModel: Object.fromEntries(knobs.speedByModel),
      },
    };
  }

  function loadedModels(): LoadedModelInfo[] {
    return [...loaded.values()].map((state) => ({
      name: state.model.name, sizeBytes: state.model.sizeBytes, sizeVramBytes: state.sizeVram,
      expiresAt: state.keepAliveMs === null ? null : state.active > 0 ? Date.now() + state.keepAliveMs : state.expiresAtMs,
      activeRequests: state.active,
    }));
  }

  const failNext = (count: number, knobOptions: { status?: number; scope?: KnobScope } = {}) => {
    knobs.failRemaining = Math.max(0, Math.floor(count));
    knobs.failStatus = knobOptions.status ?? 500;
    knobs.failScope = knobOptions.scope ?? 'generation';
  };
  const hang = (enabled: boolean, knobOptions: { scope?: KnobScope } = {}) => {
    knobs.hangScope = enabled ? knobOptions.scope ?? 'generation' : null;
  };
  const breakNext = (count: number, afterTokens: number) => {
    knobs.breakRemaining = Math.max(0, Math.floor(count));
    knobs.breakAfterTokens = Math.max(0, Math.floor(afterTokens));
  };
  const setTokensPerSecond = (tokensPerSecond: number, model?: string) => {
    positiveNumber('tokensPerSecond', tokensPerSecond);
    if (model === undefined) knobs.speedOverride = tokensPerSecond;
    else knobs.speedByModel.set(normalizeModelName(model), tokensPerSecond);
  };
  const unload = (model?: string) => {
    if (model === undefined) for (const name of [...loaded.keys()]) unloadModel(name, 'unload requested');
    else unloadModel(normalizeModelName(model), 'unload requested');
  };
  const reset = () => {
    failNext(0);
    hang(false);
    breakNext(0, 0);
    knobs.speedOverride = null;
    knobs.speedByModel.clear();
  };

  async function handleControl(path: string, method: string, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const body = method === 'POST' ? await readJsonBody(request) : {};
    const scopeOf = (value: unknown): KnobScope => {
      if (value === undefined) return 'generation';
      if (value === 'generation' || value === 'all') return value;
      throw new RequestError(400, 'scope must be "generation" or "all"');
    };
    const integerOf = (name: string, value: unknown): number => {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) throw new RequestError(400, `${name} must be a non-negative integer`);
      return value;
    };
    switch (`${method} ${path}`) {
      case 'GET /_standin/state': return sendJson(response, 200, snapshot());
      case 'GET /_standin/generations': return sendJson(response, 200, { total: generationsStarted, generations: records });
      case 'POST /_standin/fail':
        failNext(integerOf('count', body.count), { status: body.status === undefined ? 500 : integerOf('status', body.status), scope: scopeOf(body.scope) });
        break;
      case 'POST /_standin/hang':
        if (typeof body.enabled !== 'boolean') throw new RequestError(400, 'enabled must be true or false');
        hang(body.enabled, { scope: scopeOf(body.scope) });
        break;
      case 'POST /_standin/break':
        breakNext(integerOf('count', body.count), integerOf('afterTokens', body.afterTokens));
        break;
      case 'POST /_standin/speed':
        if (typeof body.tokensPerSecond !== 'number' || !(body.tokensPerSecond > 0)) throw new RequestError(400, 'tokensPerSecond must be a positive number');
        setTokensPerSecond(body.tokensPerSecond, typeof body.model === 'string' ? body.model : undefined);
        break;
      case 'POST /_standin/models':
        if (!Array.isArray(body.models)) throw new RequestError(400, 'models must be an array of names or model specs');
        try {
          setModels(body.models as Array<string | StandinModelSpec>);
        } catch (error) {
          throw new RequestError(400, (error as Error).message);
        }
        break;
      case 'POST /_standin/unload':
        unload(typeof body.model === 'string' ? body.model : undefined);
        break;
      case 'POST /_standin/reset':
        reset();
        break;
      default:
        return sendError(response, 404, `no stand-in control ${method} ${path}; see tests/ollama-standin/server.ts`);
    }
    sendJson(response, 200, snapshot());
  }

  const generationPaths = new Set(['/api/generate', '/api/chat', '/api/embed', '/api/embeddings', '/v1/chat/completions', '/v1/completions', '/v1/embeddings']);
  const hung = new Set<http.ServerResponse>();

  async function route(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const method = request.method ?? 'GET';
    const path = new URL(request.url ?? '/', 'http://standin').pathname;
    if (path.startsWith('/_standin/')) return handleControl(path, method, request, response);

    const scope: KnobScope = generationPaths.has(path) ? 'generation' : 'all';
    const applies = (knobScope: KnobScope | null) => knobScope === 'all' || (knobScope === 'generation' && scope === 'generation');
    if (applies(knobs.hangScope)) {
      // Hold the request without an answer until the client gives up or the server closes.
      hung.add(response);
      response.on('close', () => hung.delete(response));
      request.resume();
      return;
    }
    if (knobs.failRemaining > 0 && applies(knobs.failScope)) {
      knobs.failRemaining--;
      eventLog.write({ event: 'fail', path, status: knobs.failStatus, remaining: knobs.failRemaining });
      request.resume();
      const message = `stand-in: injected failure (${knobs.failRemaining} more to come)`;
      if (path.startsWith('/v1/')) return sendJson(response, knobs.failStatus, openAiError(knobs.failStatus, message));
      return sendError(response, knobs.failStatus, message);
    }

    switch (`${method} ${path}`) {
      case 'GET /':
      case 'HEAD /':
        response.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
        response.end(method === 'HEAD' ? undefined : 'Ollama is running');
        return;
      case 'GET /api/version': return sendJson(response, 200, { version });
      case 'GET /api/tags':
        return sendJson(response, 200, {
          models: [...models.values()].map((model) => ({
            name: model.name, model: model.name, modified_at: modifiedAt, size: model.sizeBytes, digest: model.digest, details: detailsOf(model),
          })),
        });
      case 'GET /api/ps': return sendJson(response, 200, { models: psModels() });
      case 'POST /api/show': {
        const body = await readJsonBody(request);
        const name = typeof body.model === 'string' && body.model !== '' ? body.model : typeof body.name === 'string' ? body.name : '';
        if (name === '') throw new RequestError(400, 'model is required');
        const model = models.get(normalizeModelName(name));
        if (model === undefined) throw new RequestError(404, `model '${name}' not found`);
        return sendJson(response, 200, {
          license: '',
          modelfile: `# Modelfile generated by "ollama show"\nFROM ${model.name}\nTEMPLATE {{ .Prompt }}\n`,
          parameters: model.embedding ? '' : 'stop "<|eot_id|>"',
          template: '{{ .Prompt }}',
          details: detailsOf(model),
          model_info: {
            'general.architecture': model.family,
            'general.parameter_count': Math.round(model.sizeBytes / (model.quantization.startsWith('F16') ? 2 : 0.6)),
            [`${model.family}.context_length`]: model.contextLength,
            [`${model.family}.embedding_length`]: model.embeddingLength,
          },
          capabilities: model.capabilities,
          modified_at: modifiedAt,
        });
      }
      case 'POST /api/generate': return handleNative('generate', await readJsonBody(request), response);
      case 'POST /api/chat': return handleNative('chat', await readJsonBody(request), response);
      case 'POST /v1/chat/completions': return handleOpenAi('chat', await readJsonBody(request), response);
      case 'POST /v1/completions': return handleOpenAi('completion', await readJsonBody(request), response);
      case 'POST /v1/embeddings': return handleOpenAiEmbeddings(await readJsonBody(request), response);
      case 'GET /v1/models':
        return sendJson(response, 200, { object: 'list', data: [...models.values()].map((model) => openAiModel(model)) });
      case 'POST /api/embed': return handleEmbed(false, await readJsonBody(request), response);
      case 'POST /api/embeddings': return handleEmbed(true, await readJsonBody(request), response);
      case 'POST /api/pull': return handlePull(await readJsonBody(request), response);
      case 'DELETE /api/delete': {
        const body = await readJsonBody(request);
        const name = typeof body.model === 'string' && body.model !== '' ? body.model : typeof body.name === 'string' ? body.name : '';
        if (name === '') throw new RequestError(400, 'model is required');
        const normalized = normalizeModelName(name);
        if (!models.has(normalized)) throw new RequestError(404, `model '${name}' not found`);
        models.delete(normalized);
        unloadModel(normalized, 'deleted');
        eventLog.write({ event: 'delete', model: normalized });
        response.writeHead(200);
        response.end();
        return;
      }
      default: {
        const modelPath = /^\/v1\/models\/(.+)$/.exec(path);
        if (method === 'GET' && modelPath !== null) {
          const name = decodeURIComponent(modelPath[1] ?? '');
          const model = models.get(normalizeModelName(name));
          if (model === undefined) throw new RequestError(404, `model "${name}" not found`);
          return sendJson(response, 200, openAiModel(model));
        }
        request.resume();
        response.writeHead(404, { 'Content-Type': 'text/plain' });
        response.end('404 page not found');
      }
    }
  }

  const sockets = new Set<Socket>();
  const server = http.createServer((request, response) => {
    route(request, response).catch((error: unknown) => {
      if (error instanceof AbortedError) return;
      const status = error instanceof RequestError ? error.status : 500;
      const message = error instanceof RequestError ? error.message : `stand-in internal error: ${(error as Error).message}`;
      // The OpenAI-compatible endpoints answer errors in OpenAI's shape, as Ollama does.
      if ((request.url ?? '').startsWith('/v1/')) sendJson(response, status, openAiError(status, message));
      else sendError(response, status, message);
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  setModels(options.models ?? ['llama3.2:1b']);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  eventLog.write({ event: 'listening', url });

  return {
    url,
    port,
    logFile: eventLog.path,
    async close() {
      if (closed) return;
      closed = true;
      for (const state of loaded.values()) if (state.timer !== null) clearTimeout(state.timer);
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      // Cut every connection, including streams in flight and hung requests.
      for (const socket of sockets) socket.destroy();
      await done;
    },
    generations: () => records.map((record) => ({ ...record })),
    generationsTotal: () => generationsStarted,
    embedRequests: () => embedCount,
    loadedModels,
    installedModels: () => [...models.keys()],
    setModels,
    failNext,
    hang,
    breakNext,
    setTokensPerSecond,
    unload,
    reset,
  };
}
