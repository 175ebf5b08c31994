// Speed calibration (`--calibrate`): when this node is idle and Ollama has a model in VRAM
// whose speed the node has not measured, a short generation measures it (Ollama's own
// eval_count / eval_duration), so the leader's first placements of that model already
// know how fast this node is, instead of guessing alike for every node. It costs a few
// dozen tokens of GPU time once per model (the figures are then kept in the data dir),
// only on models already loaded (never a load), one at a time, and only while nothing
// else runs here. Off by default: it sends Ollama requests no user asked for.
import type { OllamaState } from '../../protocol/heartbeat.ts';
import { logger } from '../log.ts';
import { runGeneration } from '../tasks/generation.ts';
import { isEmbeddingModel } from './agents.ts';
import { normalizeModelName } from '../../scheduler/tasks/node-view.ts';

const log = logger('probe:calibration');

/** What the calibration asks: long enough an answer for num_predict to end it. */
export const calibrationPrompt = 'Count from 1 to 200, one number per line.';

export interface SpeedCalibratorOptions {
  ollamaUrl: string;
  probe: { current(): OllamaState; recordGeneration(model: string, tokens: number, evalDurationNs: number): void };
  /** True while this node runs anything (tasks, gateway requests): no calibration then. */
  busy: () => boolean;
  /** How often to look for a model to measure. */
  intervalMs?: number;
  /** Tokens to generate per measurement. */
  tokens?: number;
  timeoutMs?: number;
  /** After a failed measurement, the model is left alone this long. */
  retryAfterMs?: number;
}

export class SpeedCalibrator {
  private readonly options: Required<SpeedCalibratorOptions>;
  private timer: NodeJS.Timeout | null = null;
  private readonly stopController = new AbortController();
  private running: Promise<void> | null = null;
  /** Models whose measurement failed, with when they may be tried again. */
  private readonly failedUntil = new Map<string, number>();
  /** Measurements finished (for tests and logs). */
  measuredCount = 0;

  constructor(options: SpeedCalibratorOptions) {
    this.options = { intervalMs: 2_000, tokens: 32, timeoutMs: 60_000, retryAfterMs: 600_000, ...options };
  }

  start(): void {
    if (this.timer !== null || this.stopController.signal.aborted) return;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
    this.tick();
  }

  /** Stops looking and aborts a measurement under way (Ollama sees the connection close). */
  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.stopController.abort(new Error('calibration stopped'));
    await this.running;
  }

  /** The loaded model to measure next, or null. */
  nextModel(nowMs: number = Date.now()): string | null {
    const state = this.options.probe.current();
    if (!state.reachable) return null;
    const measured = new Set(Object.keys(state.tokensPerSecond).map(normalizeModelName));
    for (const loaded of state.loaded) {
      const name = normalizeModelName(loaded.name);
      if (measured.has(name) || (this.failedUntil.get(name) ?? 0) > nowMs) continue;
      const installed = state.installed.find((model) => normalizeModelName(model.name) === name);
      // Embedding models do not generate: their speed is not a generation speed.
      if (isEmbeddingModel(installed ?? { name })) continue;
      return loaded.name;
    }
    return null;
  }

  private tick(): void {
    if (this.running !== null || this.stopController.signal.aborted || this.options.busy()) return;
    const model = this.nextModel();
    if (model === null) return;
    this.running = this.measure(model).finally(() => {
      this.running = null;
    });
  }

  private async measure(model: string): Promise<void> {
    const name = normalizeModelName(model);
    try {
      const result = await runGeneration(
        { model, prompt: calibrationPrompt, messages: null, system: null, options: { num_predict: this.options.tokens, temperature: 0 }, format: null, keepAlive: null },
        { ollamaUrl: this.options.ollamaUrl, signal: this.stopController.signal, timeoutMs: this.options.timeoutMs, onText: () => undefined },
      );
      if (!(result.evalCount > 0 && result.evalDurationNs > 0)) {
        this.failedUntil.set(name, Date.now() + this.options.retryAfterMs);
        log.info(`calibrating ${model}: Ollama reported no eval_count/eval_duration; its speed will be learned from tasks`);
        return;
      }
      this.options.probe.recordGeneration(model, result.evalCount, result.evalDurationNs);
      this.measuredCount += 1;
      log.info(`calibrated ${model}: ${(result.evalCount / (result.evalDurationNs / 1e9)).toFixed(1)} tokens/s`);
    } catch (error) {
      if (this.stopController.signal.aborted) return;
      this.failedUntil.set(name, Date.now() + this.options.retryAfterMs);
      log.warn(`calibrating ${model} failed: ${(error as Error).message}; trying again in ${Math.round(this.options.retryAfterMs / 60_000)} min`);
    }
  }
}
