// What the local Ollama can do, for the heartbeat: its version, the models installed
// (/api/tags), the models loaded and their VRAM (/api/ps), and the measured generation
// speed per model. Polled in the background; `current()` is synchronous. A missing or dead
// Ollama is a state to report (reachable: false, with a reason people can act on), retried
// with exponential backoff (1 s doubling to 30 s, back to the poll period on success); a
// single passing failure of a healthy Ollama waits for the retry before it is reported.
// Nothing throws out of here, and nothing here stops the daemon.
import { Ollama, type ListResponse, type ModelResponse } from 'ollama';
import type { InstalledModel, LoadedModel, OllamaState } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { logger } from '../log.ts';
import { installedNameOf, normalizeModelName, sameModel } from '../../scheduler/tasks/node-view.ts';
import type { MeasuredSpeeds } from './measured-store.ts';

/** A load_duration shorter than this is not a load from disk (Ollama reports a few ms for a warm model). */
const loadMsMeaningful = 200;

const log = logger('probe:ollama');

export interface OllamaProbeOptions {
  /** Base URL of Ollama, e.g. http://127.0.0.1:11434. */
  url: string;
  /** Poll period while Ollama answers. */
  intervalMs?: number;
  /** Each HTTP request to Ollama is abandoned after this long. */
  requestTimeoutMs?: number;
  /** First retry delay after a failure; doubles on each further failure. */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  /**
   * Failures in a row before a reachable Ollama is reported unreachable, for failures that
   * may be passing (timeouts, cut connections, 5xx). A refused connection or an answer
   * that is not Ollama's is reported at once.
   */
  unreachableAfterFailures?: number;
  /** Weight of the newest generation in the moving average of tokens/s (0..1]. */
  tokensPerSecondSmoothing?: number;
  /** Called after every poll whose result differs from the previous state. */
  onChange?: (state: OllamaState) => void;
  /** What an earlier run measured (measured-store.ts): the starting point of the averages. */
  measured?: MeasuredSpeeds;
  /** Called when a finished generation or a cold load changed what is measured (to save it). */
  onMeasured?: (measured: MeasuredSpeeds) => void;
  /**
   * Called when a model gets its first speed reading here (an early one while its first
   * generation streams, or a finished one): news placement should have at once rather than
   * with the next heartbeat, since until then this node looks as fast as any other.
   */
  onFirstReading?: (model: string) => void;
  /** The fetch the client uses (tests); the global fetch by default. */
  fetch?: typeof fetch;
}

export const ollamaPollIntervalMsDefault = 2_000;
export const ollamaRequestTimeoutMsDefault = 3_000;
export const ollamaBackoffInitialMsDefault = 1_000;
export const ollamaBackoffMaxMsDefault = 30_000;
const errorLengthMax = 1024;
// New models are asked about (/api/show) a few per poll, so a host with hundreds of
// models does not send hundreds of requests at once.
const showRequestsPerPollMax = 8;
const capabilitiesPerModelMax = 16;
// /api/tags with the heartbeat's 512 models is about 200 KB; anything far bigger is not Ollama.
const ollamaAnswerBytesMax = 8 * 1024 * 1024;
const errorBodyBytesMax = 4096;

/** The first `bytesMax` bytes of a body as text; the rest is not read. */
async function readPrefix(response: Response, bytesMax: number): Promise<string> {
  if (response.body === null) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < bytesMax) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return new TextDecoder().decode(Buffer.concat(chunks).subarray(0, bytesMax));
}
// Ollama reports a negative keep-alive as "now + 292 years"; beyond this, it never expires.
const neverExpiresAfterMs = 100 * 365 * 24 * 3600 * 1000;

export interface OllamaProbeStatus {
  consecutiveFailures: number;
  /** Delay before the next poll as scheduled now (backoff while failing). */
  nextPollDelayMs: number;
  lastPollAt: number | null;
}

/** The delay before the next poll after `failures` consecutive failures (0 = healthy). */
export function backoffDelayMs(failures: number, options: { intervalMs: number; backoffInitialMs: number; backoffMaxMs: number }): number {
  if (failures <= 0) return options.intervalMs;
  return Math.min(options.backoffMaxMs, options.backoffInitialMs * 2 ** Math.min(failures - 1, 30));
}

class ProbeRequestError extends Error {
  override name = 'ProbeRequestError';
}

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && typeof current === 'object' && current !== null; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The HTTP status of an `ollama` client ResponseError; undefined for other failures. */
export function httpStatusOf(error: unknown): number | undefined {
  const status = (error as { status_code?: unknown } | null)?.status_code;
  return typeof status === 'number' ? status : undefined;
}

/** Whether a failure leaves no doubt that Ollama is not there (as opposed to slow or restarting). */
export function isDefinitiveFailure(error: unknown): boolean {
  if (error instanceof ProbeRequestError || error instanceof SyntaxError) return true;
  const status = httpStatusOf(error);
  if (status !== undefined) return status < 500;
  const code = errorCode(error);
  return code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH';
}

/** An HTTP answer saying the server has no such endpoint (an Ollama look-alike without it). */
export function isMissingEndpoint(error: unknown): boolean {
  const status = httpStatusOf(error);
  return status === 404 || status === 405 || status === 501;
}

/** Says in one sentence what failed, at which URL, and what to do about it. */
export function describeOllamaFailure(error: unknown, url: string, endpoint: string, timeoutMs: number): string {
  const message = error instanceof Error ? error.message : String(error);
  const name = error instanceof Error ? error.name : '';
  const status = httpStatusOf(error);
  let text: string;
  if (status !== undefined) {
    text = `Ollama at ${url} answered ${endpoint} with HTTP ${status}: ${message}`;
  } else if (error instanceof ProbeRequestError) {
    text = `unexpected answer from ${url} to ${endpoint}: ${message}; is this URL an Ollama server? Check --ollama-url`;
  } else if (name === 'TimeoutError') {
    text = `no answer from Ollama at ${url} to ${endpoint} within ${timeoutMs} ms: it may be hung or overloaded; restart it with \`ollama serve\``;
  } else if (error instanceof SyntaxError) {
    text = `answer from ${url} to ${endpoint} is not JSON (${message}); is this URL an Ollama server? Check --ollama-url`;
  } else {
    const code = errorCode(error);
    switch (code) {
      case 'ECONNREFUSED':
        text = `connection refused at ${url}: is Ollama running? Start it with \`ollama serve\` or pass --ollama-url`;
        break;
      case 'ENOTFOUND':
      case 'EAI_AGAIN':
        text = `cannot resolve the host of ${url} (${code}): check --ollama-url`;
        break;
      case 'ECONNRESET':
      case 'UND_ERR_SOCKET':
      case 'EPIPE':
        text = `connection to ${url} was cut while asking ${endpoint} (${code}): Ollama may have crashed or be restarting`;
        break;
      case 'EHOSTUNREACH':
      case 'ENETUNREACH':
      case 'ETIMEDOUT':
      case 'UND_ERR_CONNECT_TIMEOUT':
        text = `${url} is unreachable (${code}): check the address in --ollama-url and the firewall`;
        break;
      default:
        text = `cannot reach Ollama at ${url} (${endpoint}): ${code === undefined ? message : `${code}: ${message}`}`;
    }
  }
  return text.length <= errorLengthMax ? text : text.slice(0, errorLengthMax - 1) + '…';
}

function optionalText(value: unknown, lengthMax: number): string | undefined {
  return typeof value === 'string' && value !== '' && value.length <= lengthMax ? value : undefined;
}

function nonNegative(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0;
}

function validModelName(name: unknown): name is string {
  return typeof name === 'string' && name.length > 0 && name.length <= limits.modelNameLengthMax;
}

function modelsOf(response: ListResponse, endpoint: string): ModelResponse[] {
  if (typeof response !== 'object' || response === null || !Array.isArray(response.models)) {
    throw new ProbeRequestError(`${endpoint} has no "models" list`);
  }
  return response.models;
}

/** A bounded list: what goes beyond the heartbeat's limit is dropped, loudly. */
function bounded<T>(items: T[], what: string): T[] {
  if (items.length <= limits.modelsPerNodeMax) return items;
  log.warn(`Ollama reports ${items.length} ${what}; the heartbeat carries the first ${limits.modelsPerNodeMax}`);
  return items.slice(0, limits.modelsPerNodeMax);
}

export function installedModelsFrom(models: readonly ModelResponse[]): InstalledModel[] {
  const installed: InstalledModel[] = [];
  for (const model of models) {
    const name = model.name ?? model.model;
    if (!validModelName(name)) continue;
    const details = (model.details ?? {}) as Partial<ModelResponse['details']>;
    const entry: InstalledModel = { name, sizeBytes: nonNegative(model.size) };
    const family = optionalText(details.family, 128);
    const parameterSize = optionalText(details.parameter_size, 64);
    const quantization = optionalText(details.quantization_level, 64);
    if (family !== undefined) entry.family = family;
    if (parameterSize !== undefined) entry.parameterSize = parameterSize;
    if (quantization !== undefined) entry.quantization = quantization;
    installed.push(entry);
  }
  return bounded(installed, 'installed models');
}

/** ISO time at which a loaded model expires, or null when it never does (or is not said). */
export function expiryFrom(expiresAt: unknown, nowMs: number): string | null {
  if (typeof expiresAt !== 'string' && !(expiresAt instanceof Date)) return null;
  const ms = expiresAt instanceof Date ? expiresAt.getTime() : Date.parse(expiresAt);
  // Go's zero time (year 1) and unparsable values mean "not said"; far future means never.
  if (!Number.isFinite(ms) || ms <= 0 || ms - nowMs > neverExpiresAfterMs) return null;
  return new Date(ms).toISOString();
}

export function loadedModelsFrom(models: readonly ModelResponse[], nowMs: number): LoadedModel[] {
  const loaded: LoadedModel[] = [];
  for (const model of models) {
    const name = model.name ?? model.model;
    if (!validModelName(name)) continue;
    const entry: LoadedModel = { name, sizeBytes: nonNegative(model.size), vramBytes: nonNegative(model.size_vram), expiresAt: expiryFrom(model.expires_at, nowMs) };
    // Newer Ollama versions say which context window the model was loaded with.
    const contextLength = (model as { context_length?: unknown }).context_length;
    if (typeof contextLength === 'number' && Number.isInteger(contextLength) && contextLength >= 1 && contextLength <= limits.contextLengthMax) entry.contextLength = contextLength;
    loaded.push(entry);
  }
  return bounded(loaded, 'loaded models');
}

function sameState(a: OllamaState, b: OllamaState): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

export class OllamaProbe {
  readonly url: string;
  private readonly intervalMs: number;
  private readonly requestTimeoutMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly smoothing: number;
  private readonly unreachableAfterFailures: number;
  private readonly onChange: ((state: OllamaState) => void) | undefined;
  private readonly onMeasured: ((measured: MeasuredSpeeds) => void) | undefined;
  private readonly onFirstReading: ((model: string) => void) | undefined;
  private readonly client: Ollama;
  private stopController = new AbortController();
  private readonly speeds = new Map<string, number>();
  /** Bytes of model loaded per second, averaged over the cold loads seen; null before the first. */
  private loadRate: number | null = null;
  /** Models whose speed so far is only an early reading of a generation still running. */
  private readonly provisional = new Set<string>();
  /** /api/show capabilities by model digest; only digests still installed are kept. */
  private readonly capabilitiesByDigest = new Map<string, string[]>();
  private capabilitiesByName = new Map<string, string[]>();
  private state: OllamaState;
  private failures = 0;
  /** Endpoints the server said it lacks, warned about once each. */
  private readonly missingEndpoints = new Set<string>();
  private nextDelayMs: number;
  private lastPollAt: number | null = null;
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<OllamaState> | null = null;
  private running = false;

  constructor(options: OllamaProbeOptions) {
    this.url = options.url.replace(/\/+$/, '');
    this.intervalMs = options.intervalMs ?? ollamaPollIntervalMsDefault;
    this.requestTimeoutMs = options.requestTimeoutMs ?? ollamaRequestTimeoutMsDefault;
    this.backoffInitialMs = options.backoffInitialMs ?? ollamaBackoffInitialMsDefault;
    this.backoffMaxMs = options.backoffMaxMs ?? ollamaBackoffMaxMsDefault;
    this.smoothing = options.tokensPerSecondSmoothing ?? 0.3;
    this.unreachableAfterFailures = Math.max(1, Math.floor(options.unreachableAfterFailures ?? 2));
    if (!(this.smoothing > 0 && this.smoothing <= 1)) throw new RangeError(`tokensPerSecondSmoothing must be in (0, 1], got ${this.smoothing}`);
    this.onChange = options.onChange;
    this.onMeasured = options.onMeasured;
    this.onFirstReading = options.onFirstReading;
    for (const [model, speed] of Object.entries(options.measured?.tokensPerSecond ?? {}).slice(0, limits.modelsPerNodeMax)) {
      if (validModelName(model) && Number.isFinite(speed) && speed > 0) this.speeds.set(normalizeModelName(model), speed);
    }
    const loadRate = options.measured?.loadBytesPerSecond;
    if (loadRate !== undefined && Number.isFinite(loadRate) && loadRate > 0) this.loadRate = loadRate;
    this.nextDelayMs = this.intervalMs;
    const baseFetch = options.fetch ?? fetch;
    // The ollama client takes no signal for GETs, so every request gets one here: a
    // timeout, and the probe's stop.
    const boundedFetch: typeof fetch = async (input, init) => {
      const signals = [AbortSignal.timeout(this.requestTimeoutMs), this.stopController.signal];
      if (init?.signal) signals.push(init.signal);
      const response = await baseFetch(input, { ...init, signal: AbortSignal.any(signals) });
      const declaredBytes = Number(response.headers.get('content-length') ?? 0);
      if (declaredBytes > ollamaAnswerBytesMax) {
        await response.body?.cancel();
        throw new ProbeRequestError(`the answer is ${declaredBytes} bytes, over the ${ollamaAnswerBytesMax}-byte limit`);
      }
      if (response.ok || (response.headers.get('content-type') ?? '').includes('application/json')) return response;
      // The client console.logs while reading a non-JSON error body; hand it the start of
      // the text as Ollama's JSON error shape instead, so the daemon's output stays clean.
      const text = (await readPrefix(response, errorBodyBytesMax)).slice(0, 200).trim();
      return new Response(JSON.stringify({ error: text || response.statusText || 'no message' }), {
        status: response.status, statusText: response.statusText, headers: { 'content-type': 'application/json' },
      });
    };
    this.client = new Ollama({ host: this.url, fetch: boundedFetch });
    this.state = {
      url: this.url.slice(0, limits.urlLengthMax),
      reachable: false,
      version: null,
      error: `not probed yet: the first check of ${this.url} has not finished`,
      installed: [],
      loaded: [],
      ...this.measuredSpeeds(),
    };
  }

  /** What is measured now, in the form measured-store.ts saves. */
  measuredSpeeds(): MeasuredSpeeds {
    return this.loadRate === null ? { tokensPerSecond: this.speedsRecord() } : { tokensPerSecond: this.speedsRecord(), loadBytesPerSecond: Math.round(this.loadRate) };
  }

  /** Polls once (bounded by the request timeout), then keeps polling in the background. Never throws. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    if (this.stopController.signal.aborted) this.stopController = new AbortController();
    await this.refresh();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stopController.abort();
  }

  current(): OllamaState {
    return this.state;
  }

  status(): OllamaProbeStatus {
    return { consecutiveFailures: this.failures, nextPollDelayMs: this.nextDelayMs, lastPollAt: this.lastPollAt };
  }

  /** Polls now (joining a poll under way) and reschedules the next one. Never throws. */
  refresh(): Promise<OllamaState> {
    this.inFlight ??= this.poll().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  /**
   * Folds a finished generation into the moving average of tokens/s for its model (Ollama's
   * eval_count and eval_duration). Nonsensical figures (no tokens, no time) are ignored.
   * `provisional`: an early reading of a generation still running (tokens streamed so far
   * over the time since the first), taken only for a model with no speed yet, so that the
   * node's bids know it long before a long first generation ends; the first finished
   * generation then replaces it rather than averaging with it.
   */
  recordGeneration(modelAsAsked: string, tokens: number, evalDurationNs: number, options: { provisional?: boolean } = {}): void {
    // Keyed by the full name as /api/tags lists it (a request may spell it in another case), so the scheduler finds it.
    const model = validModelName(modelAsAsked) ? normalizeModelName(installedNameOf(this.state.installed, modelAsAsked)) : modelAsAsked;
    if (!validModelName(model) || !(tokens > 0) || !(evalDurationNs > 0) || !Number.isFinite(tokens) || !Number.isFinite(evalDurationNs)) return;
    const sample = tokens / (evalDurationNs / 1e9);
    const previous = this.speeds.get(model);
    if (options.provisional === true && previous !== undefined) return;
    const replace = previous === undefined || this.provisional.has(model);
    const next = replace ? sample : previous + this.smoothing * (sample - previous);
    if (options.provisional === true) this.provisional.add(model);
    else this.provisional.delete(model);
    // Re-inserting moves the model to the back, so the map evicts the least recently measured.
    this.speeds.delete(model);
    this.speeds.set(model, next);
    while (this.speeds.size > limits.modelsPerNodeMax) {
      const oldest = this.speeds.keys().next().value;
      if (oldest === undefined) break;
      this.speeds.delete(oldest);
      this.provisional.delete(oldest);
    }
    this.state = { ...this.state, ...this.measuredSpeeds() };
    if (options.provisional !== true) this.announceMeasured();
    if (previous === undefined) {
      try {
        this.onFirstReading?.(model);
      } catch (error) {
        log.error('onFirstReading listener threw', { error });
      }
    }
    // A generation on a model Ollama did not have loaded has just loaded it: poll now so
    // the heartbeat (and the bids built on it) stop counting a cold load for it.
    if (this.running && this.state.reachable && !this.state.loaded.some((loaded) => loaded.name === model)) void this.refresh();
  }

  /**
   * What Ollama's /api/show says the model can do ("completion", "embedding", "tools",
   * "vision", ...), or null while not known (not asked yet, or an Ollama too old to say).
   */
  modelCapabilities(name: string): readonly string[] | null {
    const capabilities = this.capabilitiesByName.get(normalizeModelName(name));
    return capabilities === undefined || capabilities.length === 0 ? null : capabilities;
  }

  // Asks /api/show about installed models not seen before (by digest). A failure leaves
  // the model unknown, to be asked again next poll; it never makes Ollama unreachable.
  private async learnCapabilities(models: readonly ModelResponse[]): Promise<void> {
    const digests = new Map<string, string>();
    for (const model of models.slice(0, limits.modelsPerNodeMax)) {
      const name = model.name ?? model.model;
      if (validModelName(name)) digests.set(normalizeModelName(name), typeof model.digest === 'string' && model.digest !== '' ? model.digest : `name:${name}`);
    }
    const unknown = [...digests].filter(([, digest]) => !this.capabilitiesByDigest.has(digest)).slice(0, showRequestsPerPollMax);
    const answers = await Promise.allSettled(unknown.map(([name]) => this.client.show({ model: name })));
    answers.forEach((answer, index) => {
      const digest = unknown[index]?.[1];
      if (digest === undefined) return;
      if (answer.status === 'rejected') {
        log.debug(`could not ask Ollama about ${unknown[index]?.[0]}`, { error: answer.reason as Error });
        return;
      }
      const reported = (answer.value as { capabilities?: unknown }).capabilities;
      const capabilities = Array.isArray(reported)
        ? reported.filter((entry): entry is string => typeof entry === 'string' && entry !== '' && entry.length <= limits.capabilityLengthMax).slice(0, capabilitiesPerModelMax)
        : [];
      this.capabilitiesByDigest.set(digest, capabilities);
    });
    const installedDigests = new Set(digests.values());
    for (const digest of [...this.capabilitiesByDigest.keys()]) if (!installedDigests.has(digest)) this.capabilitiesByDigest.delete(digest);
    const byName = new Map<string, string[]>();
    for (const [name, digest] of digests) {
      const capabilities = this.capabilitiesByDigest.get(digest);
      if (capabilities !== undefined) byName.set(name, capabilities);
    }
    this.capabilitiesByName = byName;
  }

  /** What this node measured, as the state carries it. */
  private announceMeasured(): void {
    if (this.onMeasured === undefined) return;
    // Early readings are not saved: only what finished generations and loads showed.
    const { tokensPerSecond, ...rest } = this.measuredSpeeds();
    const settled = Object.fromEntries(Object.entries(tokensPerSecond).filter(([model]) => !this.provisional.has(model)));
    try {
      this.onMeasured({ tokensPerSecond: settled, ...rest });
    } catch (error) {
      log.error('onMeasured listener threw', { error });
    }
  }

  /**
   * Folds a cold load Ollama reported (load_duration of a generation) into the moving
   * average of the node's load speed, for the estimates of the next cold loads. Loads under
   * loadMsMeaningful are a warm model's bookkeeping, not a load; unknown sizes are skipped.
   */
  recordLoad(modelAsAsked: string, loadMs: number): void {
    if (!(loadMs >= loadMsMeaningful) || !Number.isFinite(loadMs)) return;
    const size = this.state.installed.find((entry) => sameModel(entry.name, modelAsAsked))?.sizeBytes;
    if (size === undefined || !(size > 0)) return;
    const sample = size / (loadMs / 1000);
    this.loadRate = this.loadRate === null ? sample : this.loadRate + this.smoothing * (sample - this.loadRate);
    this.state = { ...this.state, ...this.measuredSpeeds() };
    this.announceMeasured();
  }

  private speedsRecord(): Record<string, number> {
    const record: Record<string, number> = {};
    for (const [model, speed] of this.speeds) record[model] = Math.round(speed * 100) / 100;
    return record;
  }

  private noteMissingEndpoints(endpoints: string[]): void {
    for (const endpoint of endpoints) {
      if (this.missingEndpoints.has(endpoint)) continue;
      this.missingEndpoints.add(endpoint);
      log.warn(endpoint === 'GET /api/ps'
        ? `Ollama at ${this.url} has no ${endpoint}: which models are loaded is unknown, so placement counts a load for every model; upgrade Ollama to fix`
        : `Ollama at ${this.url} has no ${endpoint}: its version is unknown (everything else works)`);
    }
  }

  private async poll(): Promise<OllamaState> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    let next: OllamaState;
    let endpoint = 'GET /api/version';
    try {
      const versionPromise = this.client.version();
      const tagsPromise = this.client.list();
      const psPromise = this.client.ps();
      // Attach handlers at once so a failure of one does not go unobserved.
      const settled = await Promise.allSettled([versionPromise, tagsPromise, psPromise]);
      const endpoints = ['GET /api/version', 'GET /api/tags', 'GET /api/ps'];
      // Servers that speak Ollama's API but lack /api/version or /api/ps (they answer 404)
      // still serve: the version is then unknown, and so are the loaded models.
      const optional = [true, false, true];
      const missing = settled.map((result, index) => optional[index] === true && result.status === 'rejected' && isMissingEndpoint(result.reason));
      const failedAt = settled.findIndex((result, index) => result.status === 'rejected' && missing[index] !== true);
      if (failedAt >= 0) {
        endpoint = endpoints[failedAt] ?? endpoint;
        throw (settled[failedAt] as PromiseRejectedResult).reason;
      }
      this.noteMissingEndpoints(endpoints.filter((_, index) => missing[index] === true));
      const [version, tags, ps] = settled.map((result) => (result.status === 'fulfilled' ? result.value : null)) as [{ version?: unknown } | null, ListResponse, ListResponse | null];
      endpoint = 'GET /api/tags';
      const installed = installedModelsFrom(modelsOf(tags, endpoint));
      await this.learnCapabilities(modelsOf(tags, endpoint));
      endpoint = 'GET /api/ps';
      const loaded = ps === null ? [] : loadedModelsFrom(modelsOf(ps, endpoint), Date.now());
      next = {
        url: this.state.url,
        reachable: true,
        version: optionalText(version?.version, 64) ?? null,
        error: null,
        installed,
        loaded,
        ...this.measuredSpeeds(),
      };
      if (this.failures > 0) log.info(`Ollama at ${this.url} answers again`, { version: next.version });
      this.failures = 0;
    } catch (error) {
      this.failures++;
      const reason = this.stopController.signal.aborted ? `probe stopped while asking ${this.url}` : describeOllamaFailure(error, this.url, endpoint, this.requestTimeoutMs);
      if (this.state.reachable && this.failures < this.unreachableAfterFailures && !isDefinitiveFailure(error)) {
        // One timeout or cut connection from an Ollama that was fine is not yet news: the
        // last state stands until the retry (in backoffInitialMs) confirms the failure,
        // so a hiccup does not make the node drop all its agents for a moment.
        log.debug(`${reason} (retrying before reporting it)`);
        next = { ...this.state, ...this.measuredSpeeds() };
      } else {
        // Say it once when it starts failing (and when the reason changes), not every retry.
        if (this.state.reachable || reason !== this.state.error) log.warn(reason);
        // An unreachable Ollama serves nothing: report no models rather than stale ones.
        next = { url: this.state.url, reachable: false, version: null, error: reason, installed: [], loaded: [], ...this.measuredSpeeds() };
      }
    }
    this.lastPollAt = Date.now();
    const changed = !sameState(this.state, next);
    this.state = next;
    this.nextDelayMs = backoffDelayMs(this.failures, { intervalMs: this.intervalMs, backoffInitialMs: this.backoffInitialMs, backoffMaxMs: this.backoffMaxMs });
    if (this.running) {
      this.timer = setTimeout(() => void this.refresh(), this.nextDelayMs);
      this.timer.unref();
    }
    if (changed && this.onChange !== undefined) {
      try {
        this.onChange(next);
      } catch (error) {
        log.error('onChange listener threw', { error });
      }
    }
    return next;
  }
}
