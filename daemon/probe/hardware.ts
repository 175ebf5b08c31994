// What this machine has, for the heartbeat: CPU, memory and GPUs (model, vendor, VRAM,
// utilization). systeminformation can take hundreds of milliseconds (it runs nvidia-smi and
// friends), so readings happen on a background interval and `current()` returns the last
// one synchronously; the heartbeat path never waits on the hardware.
import * as si from 'systeminformation';
import os from 'node:os';
import type { Gpu, Hardware } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { logger } from '../log.ts';

const log = logger('probe:hardware');
const mebibyte = 1024 * 1024;

/** Where readings come from; systeminformation by default, a fake in tests. */
export interface HardwareSource {
  /** Static facts, read once. */
  cpu(): Promise<{ model: string; cores: number }>;
  memory(): Promise<{ totalBytes: number; usedBytes: number }>;
  gpus(): Promise<Gpu[]>;
  loadAverage1m(): number;
}

export interface HardwareProbeOptions {
  /** How often memory, load and GPUs are read again. */
  refreshIntervalMs?: number;
  /** How often GPUs are read again when there are some (default 60 s). */
  gpuRefreshIntervalMs?: number;
  /** A reading that takes longer is abandoned (its result ignored) and retried next interval. */
  readTimeoutMs?: number;
  /** How long start() waits for the first reading before going on with Node's figures. */
  firstReadingWaitMs?: number;
  source?: HardwareSource;
}

export const hardwareRefreshIntervalMsDefault = 5_000;
export const hardwareReadTimeoutMsDefault = 10_000;
export const hardwareFirstReadingWaitMsDefault = 2_000;

function clip(text: string, lengthMax: number): string {
  return text.length <= lengthMax ? text : text.slice(0, lengthMax);
}

function finiteOrNull(value: number | null | undefined): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/**
 * The GPUs of systeminformation's graphics controllers. VRAM comes from the driver's
 * figures (memoryTotal/memoryUsed, in MiB, e.g. from nvidia-smi) or, for total only, from
 * the PCI `vram` field when it is dedicated memory. What is not known stays null: nothing
 * is made up, and a machine without controllers has no GPUs.
 */
export function gpusFromControllers(controllers: ReadonlyArray<si.Systeminformation.GraphicsControllerData>): Gpu[] {
  const gpus: Gpu[] = [];
  for (const controller of controllers) {
    const model = (controller.model ?? controller.name ?? '').trim();
    const vendor = (controller.vendor ?? '').trim();
    if (model === '' && vendor === '') continue;
    const totalMiB = finiteOrNull(controller.memoryTotal) ?? (controller.vramDynamic ? null : finiteOrNull(controller.vram));
    const usedMiB = finiteOrNull(controller.memoryUsed);
    const utilizationPercent = finiteOrNull(controller.utilizationGpu);
    gpus.push({
      model: clip(model, 256),
      vendor: clip(vendor, 128),
      vramTotalBytes: totalMiB !== null && totalMiB > 0 ? totalMiB * mebibyte : null,
      vramUsedBytes: usedMiB !== null && usedMiB >= 0 ? usedMiB * mebibyte : null,
      utilization: utilizationPercent !== null && utilizationPercent >= 0 ? Math.min(1, utilizationPercent / 100) : null,
    });
    if (gpus.length === limits.gpusPerNodeMax) {
      log.warn(`more than ${limits.gpusPerNodeMax} graphics controllers; the heartbeat lists the first ${limits.gpusPerNodeMax}`);
      break;
    }
  }
  return gpus;
}

export const systeminformationSource: HardwareSource = {
  async cpu() {
    const cpu = await si.cpu();
    const model = [cpu.manufacturer, cpu.brand].filter((part) => part !== undefined && part !== '').join(' ');
    return { model: model || (os.cpus()[0]?.model ?? 'unknown'), cores: cpu.cores || os.availableParallelism() };
  },
  async memory() {
    const memory = await si.mem();
    // "Used" as the memory not available to a new process (page cache excluded): what
    // decides whether a model still fits.
    return { totalBytes: memory.total, usedBytes: Math.max(0, memory.total - memory.available) };
  },
  async gpus() {
    return gpusFromControllers((await si.graphics()).controllers);
  },
  // The same figure as systeminformation's currentLoad().avgLoad, without its sampling.
  loadAverage1m: () => os.loadavg()[0] ?? 0,
};

function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} took longer than ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

export class HardwareProbe {
  private readonly refreshIntervalMs: number;
  private readonly readTimeoutMs: number;
  private readonly firstReadingWaitMs: number;
  private readonly source: HardwareSource;
  private reading: Hardware;
  private cpuFacts: { model: string; cores: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private gpusReadAtMs: number | null = null;
  private readonly gpuRefreshIntervalMs: number;
  private inFlight: Promise<void> | null = null;
  private running = false;

  constructor(options: HardwareProbeOptions = {}) {
    this.refreshIntervalMs = options.refreshIntervalMs ?? hardwareRefreshIntervalMsDefault;
    this.readTimeoutMs = options.readTimeoutMs ?? hardwareReadTimeoutMsDefault;
    this.firstReadingWaitMs = options.firstReadingWaitMs ?? hardwareFirstReadingWaitMsDefault;
    this.source = options.source ?? systeminformationSource;
    this.gpuRefreshIntervalMs = options.gpuRefreshIntervalMs ?? 60_000;
    // Until the first reading lands, Node's own cheap figures stand in (no GPUs: they are
    // only reported once read, never guessed).
    const cores = os.availableParallelism();
    this.reading = {
      cpu: { model: clip(os.cpus()[0]?.model ?? 'unknown', 256), cores, load: (os.loadavg()[0] ?? 0) / Math.max(1, cores) },
      memory: { totalBytes: os.totalmem(), usedBytes: Math.max(0, os.totalmem() - os.freemem()) },
      gpus: [],
    };
  }

  /**
   * Starts the background readings and waits for the first one, at most
   * firstReadingWaitMs (a hung driver tool must not hold up the daemon's start). Never throws.
   */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.timer = setInterval(() => void this.refresh(), this.refreshIntervalMs);
    this.timer.unref();
    let waitTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.refresh(),
      new Promise<void>((resolve) => {
        waitTimer = setTimeout(resolve, this.firstReadingWaitMs);
        waitTimer.unref();
      }),
    ]);
    clearTimeout(waitTimer);
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  /** The last reading; never blocks. */
  current(): Hardware {
    return this.reading;
  }

  /** Reads now, unless a reading is already under way (then waits for that one). */
  refresh(): Promise<void> {
    this.inFlight ??= this.readAll().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  /**
   * Reading the graphics controllers runs driver tools (nvidia-smi, lspci) in subprocesses,
   * which costs the event loop about 150 ms a time. So GPUs are read at start and then once
   * a minute, and never again when there were none (GPUs do not come and go on a running
   * host); per-model VRAM comes from Ollama's /api/ps every few seconds anyway.
   */
  private gpusDue(): boolean {
    if (this.gpusReadAtMs === null) return true;
    if (this.reading.gpus.length === 0) return false;
    return performance.now() - this.gpusReadAtMs >= this.gpuRefreshIntervalMs;
  }

  private async readAll(): Promise<void> {
    try {
      this.cpuFacts ??= await withTimeout(this.source.cpu(), this.readTimeoutMs, 'reading the CPU');
      const readGpus = this.gpusDue();
      const [memory, gpus] = await Promise.all([
        withTimeout(this.source.memory(), this.readTimeoutMs, 'reading memory'),
        readGpus ? withTimeout(this.source.gpus(), this.readTimeoutMs, 'reading graphics controllers') : Promise.resolve(this.reading.gpus),
      ]);
      if (readGpus) this.gpusReadAtMs = performance.now();
      const cores = Math.max(0, Math.min(4096, Math.floor(this.cpuFacts.cores)));
      const load = this.source.loadAverage1m() / Math.max(1, cores);
      this.reading = {
        cpu: { model: clip(this.cpuFacts.model, 256), cores, load: Number.isFinite(load) && load >= 0 ? load : 0 },
        memory: { totalBytes: Math.max(0, memory.totalBytes), usedBytes: Math.max(0, memory.usedBytes) },
        gpus,
      };
    } catch (error) {
      // The previous reading stays; the next interval tries again.
      log.warn('hardware reading failed; keeping the previous one', { error });
    }
  }
}
