// Measured speeds kept across restarts (measured-store.ts, the probe's measured/onMeasured),
// and --calibrate's idle measurement of loaded models (calibration.ts), against the Ollama
// stand-in over real HTTP.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startStandin, type Standin, type StandinOptions } from '../../tests/ollama-standin/server.ts';
import { tempDirsRemovedAfterEach } from '../../tests/support/temp-dirs.ts';
import { SpeedCalibrator, calibrationPrompt } from './calibration.ts';
import { MeasuredWriter, measuredFileName, measuredFromFile, readMeasured, type MeasuredSpeeds } from './measured-store.ts';
import { OllamaProbe } from './ollama.ts';

const dir = tempDirsRemovedAfterEach('measured');
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function standin(options: StandinOptions = {}): Promise<Standin> {
  const server = await startStandin({ coldLoadMs: 10, logFile: null, ...options });
  cleanups.push(() => server.close());
  return server;
}

function probe(url: string, extra: Partial<ConstructorParameters<typeof OllamaProbe>[0]> = {}): OllamaProbe {
  const instance = new OllamaProbe({ url, intervalMs: 50, ...extra });
  cleanups.push(() => instance.stop());
  return instance;
}

function calibrator(options: ConstructorParameters<typeof SpeedCalibrator>[0]): SpeedCalibrator {
  const instance = new SpeedCalibrator({ intervalMs: 20, ...options });
  cleanups.push(() => instance.stop());
  return instance;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Loads `model` into the stand-in's VRAM the way Ollama does: a generate with an empty prompt (an embedding for embedding models). */
async function load(server: Standin, model: string): Promise<void> {
  const response = model.includes('embed')
    ? await fetch(`${server.url}/api/embed`, { method: 'POST', body: JSON.stringify({ model, input: 'load' }) })
    : await fetch(`${server.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model, prompt: '' }) });
  expect(response.status).toBe(200);
  await response.text();
}

describe('measured speeds on disk', () => {
  it('round-trips through the writer, which saves once per burst and at flush', async () => {
    const dataDir = dir();
    const writer = new MeasuredWriter(dataDir, 'http://127.0.0.1:11434', 30);
    writer.schedule({ tokensPerSecond: { 'llama3.2:3b': 50 } });
    writer.schedule({ tokensPerSecond: { 'llama3.2:3b': 55, 'qwen2.5:7b': 20 }, loadBytesPerSecond: 2e9 });
    expect(existsSync(join(dataDir, measuredFileName))).toBe(false);
    await waitFor(() => existsSync(join(dataDir, measuredFileName)), 'the delayed write');
    expect(readMeasured(dataDir, 'http://127.0.0.1:11434')).toEqual({ tokensPerSecond: { 'llama3.2:3b': 55, 'qwen2.5:7b': 20 }, loadBytesPerSecond: 2e9 });
    writer.schedule({ tokensPerSecond: { 'llama3.2:3b': 60 } });
    writer.flush();
    expect(readMeasured(dataDir, 'http://127.0.0.1:11434')).toEqual({ tokensPerSecond: { 'llama3.2:3b': 60 } });
  });

  it('ignores a missing, corrupt or foreign file, and bad figures in a good one', () => {
    const dataDir = dir();
    const url = 'http://127.0.0.1:11434';
    expect(readMeasured(dataDir, url)).toEqual({ tokensPerSecond: {} });
    writeFileSync(join(dataDir, measuredFileName), '{"version": 1, "tokensPer');
    expect(readMeasured(dataDir, url)).toEqual({ tokensPerSecond: {} });
    expect(measuredFromFile({ version: 1, ollamaUrl: 'http://10.0.0.9:11434', tokensPerSecond: { a: 1 } }, url)).toMatch(/measured for Ollama at http:\/\/10\.0\.0\.9:11434/);
    expect(measuredFromFile({ version: 2, ollamaUrl: url, tokensPerSecond: {} }, url)).toMatch(/unknown version 2/);
    expect(measuredFromFile([], url)).toMatch(/unknown version/);
    expect(measuredFromFile({ version: 1, ollamaUrl: url, tokensPerSecond: { good: 12.5, zero: 0, negative: -1, text: '9', nan: null, ['x'.repeat(300)]: 5 }, loadBytesPerSecond: -3 }, url))
      .toEqual({ tokensPerSecond: { good: 12.5 } });
  });

  it('starts the probe from what an earlier run measured, and reports settled figures only', async () => {
    const seen: MeasuredSpeeds[] = [];
    const ollamaProbe = probe('http://127.0.0.1:9', {
      intervalMs: 60_000, tokensPerSecondSmoothing: 0.5,
      measured: { tokensPerSecond: { 'llama3.2:3b': 40, phi3: 10, bad: Number.NaN }, loadBytesPerSecond: 1e9 },
      onMeasured: (measured) => seen.push(measured),
    });
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'llama3.2:3b': 40, 'phi3:latest': 10 });
    expect(ollamaProbe.current().loadBytesPerSecond).toBe(1e9);
    // The next generation averages with the restored figure, as with one measured this run.
    ollamaProbe.recordGeneration('llama3.2:3b', 60, 1e9);
    expect(ollamaProbe.current().tokensPerSecond['llama3.2:3b']).toBe(50);
    expect(seen.at(-1)).toEqual({ tokensPerSecond: { 'llama3.2:3b': 50, 'phi3:latest': 10 }, loadBytesPerSecond: 1e9 });
    // An early reading is used for bids but not announced for saving.
    const before = seen.length;
    ollamaProbe.recordGeneration('qwen2.5:7b', 8, 0.4e9, { provisional: true });
    expect(ollamaProbe.current().tokensPerSecond['qwen2.5:7b']).toBe(20);
    expect(seen).toHaveLength(before);
    ollamaProbe.recordGeneration('mistral:7b', 30, 1e9);
    expect(seen.at(-1)!.tokensPerSecond).toStrictEqual({ 'llama3.2:3b': 50, 'phi3:latest': 10, 'mistral:7b': 30 });
  });
});

describe('SpeedCalibrator (--calibrate)', () => {
  it('measures each loaded, unmeasured model once, with a short generation, while idle', async () => {
    const server = await standin({ models: ['llama3.2:3b', 'qwen2.5:7b', 'mistral:7b', 'nomic-embed-text'], tokensPerSecond: 400 });
    server.setTokensPerSecond(200, 'qwen2.5:7b');
    const ollamaProbe = probe(server.url);
    await ollamaProbe.start();
    let busy = true;
    const calibration = calibrator({ ollamaUrl: server.url, probe: ollamaProbe, busy: () => busy, tokens: 16 });
    calibration.start();
    await load(server, 'llama3.2:3b');
    await load(server, 'qwen2.5:7b');
    await load(server, 'nomic-embed-text');
    await waitFor(() => ollamaProbe.current().loaded.length === 3, 'the probe to see three loaded models');
    const loadsOnly = server.generationsTotal();
    // Busy: nothing is sent.
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(server.generationsTotal()).toBe(loadsOnly);
    busy = false;
    await waitFor(() => calibration.measuredCount === 2, 'two calibrations');
    const speeds = ollamaProbe.current().tokensPerSecond;
    expect(speeds['llama3.2:3b']).toBeGreaterThan(200);
    expect(speeds['qwen2.5:7b']).toBeGreaterThan(100);
    expect(speeds['qwen2.5:7b']).toBeLessThan(speeds['llama3.2:3b']!);
    // Not the embedding model, not the model that is not loaded; each measured once, 16 tokens.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const calibrations = server.generations().filter((record) => record.promptText.includes(calibrationPrompt));
    expect(calibrations.map((record) => record.model).sort()).toEqual(['llama3.2:3b', 'qwen2.5:7b']);
    expect(calibrations.every((record) => record.tokens === 16 && record.outcome === 'completed' && !record.coldLoad)).toBe(true);
    expect(speeds['mistral:7b']).toBeUndefined();
    expect(speeds['nomic-embed-text:latest']).toBeUndefined();
  });

  it('leaves a model whose measurement failed alone for a while, and aborts a measurement at stop', async () => {
    const server = await standin({ models: ['llama3.2:3b', 'qwen2.5:7b'], tokensPerSecond: 400 });
    const ollamaProbe = probe(server.url);
    await ollamaProbe.start();
    await load(server, 'llama3.2:3b');
    await waitFor(() => ollamaProbe.current().loaded.length === 1, 'the probe to see the loaded model');
    server.failNext(1, { status: 500 });
    const calibration = calibrator({ ollamaUrl: server.url, probe: ollamaProbe, busy: () => false, tokens: 8, retryAfterMs: 60_000 });
    calibration.start();
    await waitFor(() => calibration.nextModel() === null, 'the failed model to be set aside');
    expect(calibration.measuredCount).toBe(0);
    expect(calibration.nextModel(Date.now() + 61_000)).toBe('llama3.2:3b');
    // A slow measurement is cut off by stop(): the stand-in sees the generation aborted.
    server.setTokensPerSecond(2, 'qwen2.5:7b');
    await load(server, 'qwen2.5:7b');
    await waitFor(() => server.generations().some((record) => record.model === 'qwen2.5:7b' && record.promptText.includes(calibrationPrompt) && record.outcome === 'running'), 'the slow measurement to start');
    await calibration.stop();
    await waitFor(() => server.generations().some((record) => record.model === 'qwen2.5:7b' && record.outcome === 'aborted'), 'the stand-in to see the abort');
    expect(ollamaProbe.current().tokensPerSecond['qwen2.5:7b']).toBeUndefined();
  });
});
