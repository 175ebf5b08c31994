// Preloads (protocol/preload.ts): the leader asks a node to load a model into VRAM ahead of
// the tasks that will want it there, and the node loads it with an empty-prompt generation,
// as Ollama documents for preloading. A node loads one model at a time, only a model it has
// installed and not loaded, only below Ollama's default number of loaded models, and, when
// its GPUs report their VRAM, only one that fits beside what is in use: a preload is not to
// make Ollama evict a model. Requests from anyone but the
// leader this node knows are ignored. The request is advice: a refusal is only logged, and
// the leader, which sees the node's loaded models in its heartbeat, stops counting on it.
import { Ollama } from 'ollama';
import { PRELOAD_PROTOCOL, preloadRequestCodec, type PreloadRequest } from '../../protocol/preload.ts';
import { hasModel, modelKey } from '../../scheduler/tasks/node-view.ts';
import { logger } from '../log.ts';
import { metrics as defaultMetrics, type Counter, type MetricsRegistry } from '../metrics/registry.ts';
import type { P2PHost } from '../p2p/host.ts';
import type { HealthProbe } from '../probe/index.ts';
import { describeOllamaFailure } from '../probe/ollama.ts';
import { ollamaFetch } from './ollama-transport.ts';

const log = logger('tasks:preload');

/**
 * Ollama keeps at most OLLAMA_MAX_LOADED_MODELS models loaded, by default 3 per GPU (3 with
 * none), and evicts one to load another beyond that. hivemesh cannot read Ollama's setting,
 * so a preload stops at the default.
 */
export const loadedModelsPerGpuDefault = 3;

/** A load taking longer than this is abandoned (Ollama goes on loading; the next task finds it). */
export const preloadTimeoutMsDefault = 10 * 60_000;

/** The sum, or null when any part is unknown. */
function knownSum(values: ReadonlyArray<number | null>): number | null {
  let sum = 0;
  for (const value of values) {
    if (value === null) return null;
    sum += value;
  }
  return sum;
}

export interface PreloadServiceDeps {
  nodeId: string;
  host: Pick<P2PHost, 'handleMessages' | 'send'>;
  /** The leader this node follows now, or null. */
  leader: () => string | null;
  ollamaUrl: string;
  /** False (`--no-preload`): every request is refused. */
  accept: boolean;
  probe: Pick<HealthProbe, 'snapshot' | 'recordLoad' | 'installedName' | 'refreshOllama'>;
  timeoutMs?: number;
  /** Where hivemesh_preloads_total goes; the process's registry by default. */
  metrics?: MetricsRegistry;
}

export interface PreloadStats {
  /** Loads started on this node. */
  started: number;
  /** Loads Ollama finished. */
  loaded: number;
  /** Requests refused (the reason is logged at debug level). */
  refused: number;
  /** Loads Ollama did not finish (logged as a warning). */
  failed: number;
  /** Preloads this node asked for as leader. */
  asked: number;
}

export class PreloadService {
  private readonly deps: PreloadServiceDeps;
  private readonly loading = new Set<string>();
  private readonly stopController = new AbortController();
  private readonly running = new Set<Promise<void>>();
  readonly stats: PreloadStats = { started: 0, loaded: 0, refused: 0, failed: 0, asked: 0 };
  private readonly counter: Counter;

  constructor(deps: PreloadServiceDeps) {
    this.deps = deps;
    this.counter = (deps.metrics ?? defaultMetrics).counter(
      'hivemesh_preloads_total',
      'Model preloads: outcome="asked" requested by this node as leader; "started", "loaded", "refused" (--no-preload, no room in VRAM, ...) or "failed" on this node.',
    );
  }

  private count(outcome: keyof PreloadStats): void {
    this.stats[outcome] += 1;
    this.counter.inc({ outcome });
  }

  async start(): Promise<void> {
    await this.deps.host.handleMessages(PRELOAD_PROTOCOL, (from, bytes) => this.onRequest(from, bytes));
  }

  /** Abandons the loads under way (Ollama sees the connection close). */
  async stop(): Promise<void> {
    this.stopController.abort(new Error('the daemon is stopping'));
    await Promise.allSettled([...this.running]);
  }

  /** Leader side: asks `node` (maybe this one) to load `model`. Never throws. */
  ask(node: string, model: string, term: number): void {
    this.count('asked');
    if (node === this.deps.nodeId) {
      this.load(model);
      return;
    }
    try {
      this.deps.host.send(node, PRELOAD_PROTOCOL, preloadRequestCodec.encode({ kind: 'preload', leader: this.deps.nodeId, term, model }));
    } catch (error) {
      log.debug('could not send a preload request', { node, model, error: error as Error });
    }
  }

  private onRequest(from: string, bytes: Uint8Array): void {
    let request: PreloadRequest;
    try {
      request = preloadRequestCodec.decode(bytes);
    } catch (error) {
      log.debug('dropped a malformed preload request', { from, error: error as Error });
      return;
    }
    if (request.leader !== from || this.deps.leader() !== from || from === this.deps.nodeId) {
      log.debug('ignored a preload request from a node that is not the leader', { from });
      return;
    }
    this.load(request.model);
  }

  /** Why this node will not load `model` now, or null when it may. */
  refusal(model: string): string | null {
    if (!this.deps.accept) return 'this node was started with --no-preload';
    if (this.stopController.signal.aborted) return 'the daemon is stopping';
    const { ollama, hardware } = this.deps.probe.snapshot();
    if (!ollama.reachable) return `Ollama is not reachable (${ollama.error ?? 'no answer'})`;
    const installed = ollama.installed.find((entry) => modelKey(entry.name) === modelKey(model));
    if (installed === undefined) return `${model} is not installed here`;
    if (hasModel(ollama.loaded.map((entry) => entry.name), model)) return `${model} is loaded already`;
    if (this.loading.has(modelKey(model))) return `${model} is being loaded already`;
    if (this.loading.size > 0) return `another preload is under way (${[...this.loading].join(', ')})`;
    const loadedMax = loadedModelsPerGpuDefault * Math.max(1, hardware.gpus.length);
    if (ollama.loaded.length >= loadedMax) {
      return `${ollama.loaded.length} models are loaded, Ollama's default most (OLLAMA_MAX_LOADED_MODELS: ${loadedModelsPerGpuDefault} per GPU): it would evict one`;
    }
    const total = knownSum(hardware.gpus.map((gpu) => gpu.vramTotalBytes));
    if (hardware.gpus.length > 0 && total !== null) {
      // What Ollama holds, or what the driver says is taken when that is more (other programs).
      const held = ollama.loaded.reduce((sum, entry) => sum + entry.vramBytes, 0);
      const used = Math.max(held, knownSum(hardware.gpus.map((gpu) => gpu.vramUsedBytes)) ?? 0);
      if (used + installed.sizeBytes > total) {
        return `${model} (${(installed.sizeBytes / 1e9).toFixed(1)} GB) does not fit beside the loaded models (${(used / 1e9).toFixed(1)} of ${(total / 1e9).toFixed(1)} GB of VRAM): Ollama would evict one`;
      }
    }
    return null;
  }

  /** Starts loading `model` unless refused; returns the refusal, or null once the load is under way. */
  load(model: string): string | null {
    const refusal = this.refusal(model);
    if (refusal !== null) {
      this.count('refused');
      log.debug(`not preloading ${model}: ${refusal}`);
      return refusal;
    }
    const name = this.deps.probe.installedName(model);
    const key = modelKey(name);
    this.loading.add(key);
    this.count('started');
    const run = this.run(name).finally(() => {
      this.loading.delete(key);
      this.running.delete(run);
    });
    this.running.add(run);
    return null;
  }

  private async run(model: string): Promise<void> {
    const timeoutMs = this.deps.timeoutMs ?? preloadTimeoutMsDefault;
    const signal = AbortSignal.any([this.stopController.signal, AbortSignal.timeout(timeoutMs)]);
    const client = new Ollama({ host: this.deps.ollamaUrl, fetch: (input, init) => ollamaFetch(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, signal]) : signal }) });
    const began = performance.now();
    try {
      const answer = await client.generate({ model, prompt: '', stream: false });
      this.count('loaded');
      const loadMs = typeof answer.load_duration === 'number' && answer.load_duration > 0 ? answer.load_duration / 1e6 : performance.now() - began;
      this.deps.probe.recordLoad(model, loadMs);
      log.info(`preloaded ${model} at the leader's request in ${Math.round(loadMs)} ms`);
    } catch (error) {
      if (this.stopController.signal.aborted) return;
      this.count('failed');
      log.warn(`preloading ${model} failed: ${describeOllamaFailure(error, this.deps.ollamaUrl, 'POST /api/generate', timeoutMs)}`);
    } finally {
      // The heartbeat shows the model in VRAM from the next poll on.
      this.deps.probe.refreshOllama();
    }
  }
}
