// The hardware probe: schema-valid readings from the real machine, GPU mapping from
// systeminformation's data, and the background refresh that never blocks current().
import { describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import * as si from 'systeminformation';
import { Hardware, Gpu } from '../../protocol/heartbeat.ts';
import { HardwareProbe, gpusFromControllers, type HardwareSource } from './hardware.ts';

type Controller = si.Systeminformation.GraphicsControllerData;

function controller(fields: Partial<Controller>): Controller {
  return { vendor: '', model: '', bus: 'PCI', vram: null, vramDynamic: false, ...fields };
}

describe('HardwareProbe', () => {
  it('reads this machine into a schema-valid Hardware, with only the GPUs it has', async () => {
    const probe = new HardwareProbe({ refreshIntervalMs: 60_000 });
    // Before the first reading there is already a valid (Node-provided) answer.
    expect(Value.Check(Hardware, probe.current())).toBe(true);
    await probe.start();
    try {
      const hardware = probe.current();
      expect(Value.Errors(Hardware, hardware).First()).toBeUndefined();
      expect(hardware.cpu.cores).toBeGreaterThan(0);
      expect(hardware.cpu.model).not.toBe('');
      expect(hardware.memory.totalBytes).toBeGreaterThan(0);
      expect(hardware.memory.usedBytes).toBeLessThanOrEqual(hardware.memory.totalBytes);
      const controllers = (await si.graphics()).controllers;
      expect(hardware.gpus).toEqual(gpusFromControllers(controllers));
    } finally {
      probe.stop();
    }
  });

  it('maps driver figures to bytes and ratios and leaves unknowns null', () => {
    const gpus = gpusFromControllers([
      controller({ vendor: 'NVIDIA', model: 'NVIDIA GeForce RTX 4090', vram: 24564, memoryTotal: 24564, memoryUsed: 1024, utilizationGpu: 37 }),
      controller({ vendor: 'Intel Corporation', model: 'UHD Graphics 630', vram: 128, vramDynamic: true }),
      controller({ vendor: 'Advanced Micro Devices, Inc. [AMD/ATI]', model: 'Radeon RX 7900 XTX', vram: 24576 }),
      controller({ vendor: '', model: '' }),
    ]);
    expect(gpus).toEqual([
      { model: 'NVIDIA GeForce RTX 4090', vendor: 'NVIDIA', vramTotalBytes: 24564 * 1024 * 1024, vramUsedBytes: 1024 * 1024 * 1024, utilization: 0.37 },
      { model: 'UHD Graphics 630', vendor: 'Intel Corporation', vramTotalBytes: null, vramUsedBytes: null, utilization: null },
      { model: 'Radeon RX 7900 XTX', vendor: 'Advanced Micro Devices, Inc. [AMD/ATI]', vramTotalBytes: 24576 * 1024 * 1024, vramUsedBytes: null, utilization: null },
    ]);
    for (const gpu of gpus) expect(Value.Check(Gpu, gpu)).toBe(true);
    expect(gpusFromControllers([])).toEqual([]);
  });

  it('reads GPUs (subprocesses) rarely: never again when there are none, else on their own period', async () => {
    const counting = (gpus: Array<{ model: string }>) => {
      const counter = { gpuCalls: 0, memoryCalls: 0 };
      const source: HardwareSource = {
        cpu: async () => ({ model: 'Test CPU', cores: 4 }),
        memory: async () => {
          counter.memoryCalls++;
          return { totalBytes: 1000, usedBytes: 10 };
        },
        gpus: async () => {
          counter.gpuCalls++;
          return gpus.map((gpu) => ({ model: gpu.model, vendor: 'Fake', vramTotalBytes: null, vramUsedBytes: null, utilization: null }));
        },
        loadAverage1m: () => 1,
      };
      return { counter, source };
    };
    const none = counting([]);
    const withGpu = counting([{ model: 'Fake GPU' }]);
    const probes = [
      new HardwareProbe({ source: none.source, refreshIntervalMs: 60_000 }),
      new HardwareProbe({ source: withGpu.source, refreshIntervalMs: 60_000, gpuRefreshIntervalMs: 0 }),
    ];
    for (const probe of probes) {
      await probe.start();
      await probe.refresh();
      await probe.refresh();
      probe.stop();
    }
    expect(none.counter).toEqual({ gpuCalls: 1, memoryCalls: 3 });
    expect(withGpu.counter).toEqual({ gpuCalls: 3, memoryCalls: 3 });
  });

  it('refreshes in the background: current() answers at once while a slow reading runs', async () => {
    let memoryCalls = 0;
    let releaseSlowRead: () => void = () => undefined;
    const source: HardwareSource = {
      cpu: async () => ({ model: 'Test CPU', cores: 8 }),
      memory: async () => {
        memoryCalls++;
        if (memoryCalls === 2) await new Promise<void>((resolve) => (releaseSlowRead = resolve));
        return { totalBytes: 1000, usedBytes: 100 * memoryCalls };
      },
      gpus: async () => [{ model: 'Fake GPU', vendor: 'Fake', vramTotalBytes: 8e9, vramUsedBytes: null, utilization: null }],
      loadAverage1m: () => 4,
    };
    const probe = new HardwareProbe({ source, refreshIntervalMs: 20 });
    await probe.start();
    try {
      expect(probe.current()).toEqual({
        cpu: { model: 'Test CPU', cores: 8, load: 0.5 },
        memory: { totalBytes: 1000, usedBytes: 100 },
        gpus: [{ model: 'Fake GPU', vendor: 'Fake', vramTotalBytes: 8e9, vramUsedBytes: null, utilization: null }],
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      // The second reading hangs; readings do not pile up and current() still answers.
      expect(memoryCalls).toBe(2);
      expect(probe.current().memory.usedBytes).toBe(100);
      releaseSlowRead();
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(memoryCalls).toBeGreaterThan(2);
      expect(probe.current().memory.usedBytes).toBeGreaterThanOrEqual(200);
    } finally {
      probe.stop();
    }
    const callsAtStop = memoryCalls;
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(memoryCalls).toBe(callsAtStop);
  });

  it('keeps the last reading when a reading fails or times out', async () => {
    let fail = false;
    const source: HardwareSource = {
      cpu: async () => ({ model: 'Test CPU', cores: 2 }),
      memory: async () => {
        if (fail) return new Promise<never>(() => undefined);
        return { totalBytes: 10, usedBytes: 5 };
      },
      gpus: async () => {
        if (fail) throw new Error('nvidia-smi failed');
        return [];
      },
      loadAverage1m: () => 1,
    };
    const probe = new HardwareProbe({ source, refreshIntervalMs: 60_000, readTimeoutMs: 50 });
    await probe.start();
    fail = true;
    const started = Date.now();
    await probe.refresh();
    expect(Date.now() - started).toBeLessThan(1000);
    expect(probe.current()).toEqual({ cpu: { model: 'Test CPU', cores: 2, load: 0.5 }, memory: { totalBytes: 10, usedBytes: 5 }, gpus: [] });
    probe.stop();
  });

  it('does not hold up start() beyond firstReadingWaitMs when the first reading hangs', async () => {
    const source: HardwareSource = {
      cpu: () => new Promise(() => undefined),
      memory: async () => ({ totalBytes: 1, usedBytes: 1 }),
      gpus: async () => [],
      loadAverage1m: () => 0,
    };
    const probe = new HardwareProbe({ source, refreshIntervalMs: 60_000, firstReadingWaitMs: 50, readTimeoutMs: 60_000 });
    const started = Date.now();
    await probe.start();
    expect(Date.now() - started).toBeLessThan(1000);
    // Node's own figures stand in meanwhile: valid, and without invented GPUs.
    expect(Value.Check(Hardware, probe.current())).toBe(true);
    expect(probe.current().gpus).toEqual([]);
    probe.stop();
  });
});
