// The Ollama probe against the Ollama stand-in over real HTTP: reachable state, models,
// loaded models with VRAM and expiry, failures with their reasons, backoff, recovery.
import { afterEach, describe, expect, it, vi } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Value } from '@sinclair/typebox/value';
import { Ollama } from 'ollama';
import { OllamaState } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { startStandin, type Standin, type StandinOptions } from '../../tests/ollama-standin/server.ts';
import { OllamaProbe, backoffDelayMs, expiryFrom, type OllamaProbeOptions } from './ollama.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function standin(options: StandinOptions = {}): Promise<Standin> {
  const server = await startStandin({ tokensPerSecond: 1000, coldLoadMs: 10, ...options });
  cleanups.push(() => server.close());
  return server;
}

function probe(options: OllamaProbeOptions): OllamaProbe {
  const instance = new OllamaProbe(options);
  cleanups.push(() => instance.stop());
  return instance;
}

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('OllamaProbe', () => {
  it('reports a reachable Ollama: version, installed models with details, loaded models with VRAM and expiry', async () => {
    const server = await standin({ models: ['llama3.2:1b', 'qwen2.5:7b', 'nomic-embed-text'], version: '0.12.6' });
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000 });
    await ollamaProbe.start();
    let state = ollamaProbe.current();
    expect(Value.Errors(OllamaState, state).First()).toBeUndefined();
    expect(state).toMatchObject({ url: server.url, reachable: true, version: '0.12.6', error: null, loaded: [] });
    expect(state.installed).toEqual([
      { name: 'llama3.2:1b', sizeBytes: expect.any(Number), family: 'llama', parameterSize: '1B', quantization: 'Q4_K_M' },
      { name: 'qwen2.5:7b', sizeBytes: expect.any(Number), family: 'qwen', parameterSize: '7B', quantization: 'Q4_K_M' },
      { name: 'nomic-embed-text:latest', sizeBytes: expect.any(Number), family: 'nomic-bert', parameterSize: '137M', quantization: 'F16' },
    ]);

    const client = new Ollama({ host: server.url });
    await client.generate({ model: 'qwen2.5:7b', prompt: 'hi', options: { num_predict: 2 } });
    await client.generate({ model: 'llama3.2:1b', prompt: 'hi', keep_alive: -1, options: { num_predict: 2 } });
    state = await ollamaProbe.refresh();
    expect(Value.Check(OllamaState, state)).toBe(true);
    const qwen = state.loaded.find((model) => model.name === 'qwen2.5:7b');
    expect(qwen?.vramBytes).toBeGreaterThan(4e9);
    expect(qwen?.vramBytes).toBe(qwen?.sizeBytes);
    expect(qwen?.contextLength).toBe(4096);
    const expiresInMs = Date.parse(qwen?.expiresAt ?? '') - Date.now();
    expect(expiresInMs).toBeGreaterThan(4 * 60_000);
    expect(expiresInMs).toBeLessThanOrEqual(5 * 60_000);
    // keep_alive -1: Ollama says "in 292 years", the heartbeat says never (null).
    expect(state.loaded.find((model) => model.name === 'llama3.2:1b')?.expiresAt).toBeNull();
    // Stopped, then started again: it polls as before.
    ollamaProbe.stop();
    await ollamaProbe.start();
    expect(ollamaProbe.current()).toMatchObject({ reachable: true, error: null });
  });

  it('reports a stopped Ollama with the reason, backs off exponentially, and recovers on restart', async () => {
    const server = await standin();
    const port = server.port;
    const changes: boolean[] = [];
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000, backoffInitialMs: 40, backoffMaxMs: 160, onChange: (state) => changes.push(state.reachable) });
    await ollamaProbe.start();
    expect(ollamaProbe.current().reachable).toBe(true);
    await server.close();

    // The first poll may meet a pooled connection the dying server cut (not yet reported,
    // in case it passes); the retry is refused, which is reported at once.
    await ollamaProbe.refresh();
    expect(ollamaProbe.status()).toMatchObject({ consecutiveFailures: 1, nextPollDelayMs: 40 });
    const down = await ollamaProbe.refresh();
    expect(down).toMatchObject({ reachable: false, version: null, installed: [], loaded: [] });
    expect(down.error).toBe(`connection refused at http://127.0.0.1:${port}: is Ollama running? Start it with \`ollama serve\` or pass --ollama-url`);
    expect(Value.Check(OllamaState, down)).toBe(true);
    expect(ollamaProbe.status()).toMatchObject({ consecutiveFailures: 2, nextPollDelayMs: 80 });
    // The retries run on their own timer: 80, 160, then capped at 160 ms.
    const delays = new Set<number>();
    await waitFor(() => {
      delays.add(ollamaProbe.status().nextPollDelayMs);
      return ollamaProbe.status().consecutiveFailures >= 5;
    });
    expect([...delays].sort((a, b) => a - b)).toEqual([80, 160]);
    expect(ollamaProbe.status().nextPollDelayMs).toBe(160);

    const restarted = await standin({ port, models: ['qwen2.5:7b'] });
    await waitFor(() => ollamaProbe.current().reachable, 2000);
    expect(ollamaProbe.current()).toMatchObject({ reachable: true, error: null, installed: [{ name: 'qwen2.5:7b' }] });
    expect(ollamaProbe.status()).toMatchObject({ consecutiveFailures: 0, nextPollDelayMs: 60_000 });
    // onChange fires on every change (the reason too), so consecutive repeats are folded here.
    expect(changes.filter((reachable, index) => index === 0 || changes[index - 1] !== reachable)).toEqual([true, false, true]);
    await restarted.close();
  });

  it('says what failed when Ollama hangs, answers errors, or is not Ollama at all', async () => {
    const server = await standin();
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000, requestTimeoutMs: 150, backoffInitialMs: 60_000 });
    server.hang(true, { scope: 'all' });
    const hung = await ollamaProbe.refresh();
    expect(hung.reachable).toBe(false);
    expect(hung.error).toMatch(new RegExp(`^no answer from Ollama at ${server.url} to GET /api/\\w+ within 150 ms`));
    server.hang(false);
    server.failNext(1, { scope: 'all', status: 500 });
    const failing = await ollamaProbe.refresh();
    expect(failing.error).toMatch(new RegExp(`^Ollama at ${server.url} answered GET /api/\\w+ with HTTP 500: stand-in: injected failure`));
    expect((await ollamaProbe.refresh()).reachable).toBe(true);

    const notOllama = http.createServer((request, response) => {
      if (request.url === '/api/version') {
        response.writeHead(502, { 'Content-Type': 'text/html' });
        response.end('<html>Bad Gateway</html>');
        return;
      }
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end('{"hello":"world"}');
    });
    await new Promise<void>((resolve) => notOllama.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => notOllama.close(() => resolve())));
    const wrongUrl = `http://127.0.0.1:${(notOllama.address() as AddressInfo).port}`;
    const consoleLog = vi.spyOn(console, 'log');
    const wrong = await probe({ url: wrongUrl, intervalMs: 60_000 }).refresh();
    expect(consoleLog).not.toHaveBeenCalled();
    consoleLog.mockRestore();
    expect(wrong.error).toBe(`Ollama at ${wrongUrl} answered GET /api/version with HTTP 502: <html>Bad Gateway</html>`);
    const huge = http.createServer((_request, response) => {
      response.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': String(64 * 1024 * 1024) });
      response.write('{"models":[');
    });
    await new Promise<void>((resolve) => huge.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => {
      huge.closeAllConnections();
      huge.close(() => resolve());
    }));
    const hugeUrl = `http://127.0.0.1:${(huge.address() as AddressInfo).port}`;
    const tooBig = await probe({ url: hugeUrl, intervalMs: 60_000 }).refresh();
    expect(tooBig.error).toMatch(new RegExp(`^unexpected answer from ${hugeUrl} to GET /api/\\w+: the answer is 67108864 bytes, over the 8388608-byte limit`));
    const wrongTags = await probe({ url: wrongUrl.replace('127.0.0.1', 'localhost'), intervalMs: 60_000, fetch: (input, init) => fetch(String(input).replace('/api/version', '/api/other'), init) }).refresh();
    expect(wrongTags.error).toContain('to GET /api/tags: GET /api/tags has no "models" list; is this URL an Ollama server? Check --ollama-url');
  });

  it('serves from an Ollama look-alike without /api/version or /api/ps (404): version and loaded models unknown', async () => {
    const server = await standin({ models: ['llama3.2:1b'] });
    const lookAlike = http.createServer((request, response) => {
      if (request.url === '/api/version' || request.url === '/api/ps') {
        response.writeHead(404, { 'Content-Type': 'text/plain' });
        response.end('404 page not found');
        return;
      }
      void fetch(server.url + (request.url ?? '/'), { method: request.method ?? 'GET' }).then(async (answer) => {
        response.writeHead(answer.status, { 'Content-Type': answer.headers.get('content-type') ?? 'application/json' });
        response.end(await answer.text());
      });
    });
    await new Promise<void>((resolve) => lookAlike.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => lookAlike.close(() => resolve())));
    const url = `http://127.0.0.1:${(lookAlike.address() as AddressInfo).port}`;
    const state = await probe({ url, intervalMs: 60_000 }).refresh();
    expect(state.reachable).toBe(true);
    expect(state.version).toBeNull();
    expect(state.installed.map((model) => model.name)).toEqual(['llama3.2:1b']);
    expect(state.loaded).toEqual([]);
  });

  it('reports a passing failure of a reachable Ollama only when the retry fails too', async () => {
    const server = await standin();
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000, backoffInitialMs: 60_000 });
    await ollamaProbe.start();
    server.failNext(1, { scope: 'all', status: 500 });
    expect((await ollamaProbe.refresh()).reachable).toBe(true);
    expect(ollamaProbe.status().consecutiveFailures).toBe(1);
    expect(await ollamaProbe.refresh()).toMatchObject({ reachable: true, error: null });
    expect(ollamaProbe.status().consecutiveFailures).toBe(0);

    // A poll sends three requests at once (version, tags, ps): six failures fail two polls.
    server.failNext(6, { scope: 'all', status: 500 });
    expect((await ollamaProbe.refresh()).reachable).toBe(true);
    const failed = await ollamaProbe.refresh();
    expect(failed).toMatchObject({ reachable: false, installed: [] });
    expect(failed.error).toMatch(/answered GET \/api\/\w+ with HTTP 500/);

    // A 404 from /api/tags is not Ollama having a bad moment: reported at once. (A 404 from
    // /api/version or /api/ps alone means a look-alike without them; see the test above.)
    expect((await ollamaProbe.refresh()).reachable).toBe(true);
    server.failNext(3, { scope: 'all', status: 404 });
    const missing = await ollamaProbe.refresh();
    expect(missing.reachable).toBe(false);
    expect(missing.error).toMatch(/answered GET \/api\/tags with HTTP 404/);
  });

  it('takes an early reading only for an unmeasured model, and the first finished generation replaces it', () => {
    const firstReadings: string[] = [];
    const ollamaProbe = probe({ url: 'http://127.0.0.1:9', intervalMs: 60_000, tokensPerSecondSmoothing: 0.5, onFirstReading: (model) => firstReadings.push(model) });
    ollamaProbe.recordGeneration('qwen2.5:7b', 8, 0.4e9, { provisional: true });
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'qwen2.5:7b': 20 });
    // The first reading of a model is news (the daemon sends a heartbeat at once); later ones are not.
    expect(firstReadings).toEqual(['qwen2.5:7b']);
    // A second early reading changes nothing: one is enough to place by.
    ollamaProbe.recordGeneration('qwen2.5:7b', 8, 0.1e9, { provisional: true });
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'qwen2.5:7b': 20 });
    // The exact figure replaces the reading instead of averaging with it; then averages as usual.
    ollamaProbe.recordGeneration('qwen2.5:7b', 100, 4e9);
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'qwen2.5:7b': 25 });
    ollamaProbe.recordGeneration('qwen2.5:7b', 100, 2e9);
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'qwen2.5:7b': 37.5 });
    // A measured model ignores early readings.
    ollamaProbe.recordGeneration('qwen2.5:7b', 8, 0.01e9, { provisional: true });
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'qwen2.5:7b': 37.5 });
    ollamaProbe.recordGeneration('mistral:7b', 100, 2e9);
    expect(firstReadings).toEqual(['qwen2.5:7b', 'mistral:7b']);
  });

  it('learns the load speed from cold loads of installed models, ignoring warm ones', async () => {
    const server = await standin({ models: ['qwen2.5:7b'] });
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000, tokensPerSecondSmoothing: 0.5 });
    await ollamaProbe.start();
    const size = ollamaProbe.current().installed[0]!.sizeBytes;
    expect(ollamaProbe.current().loadBytesPerSecond).toBeUndefined();
    ollamaProbe.recordLoad('qwen2.5:7b', 5);
    ollamaProbe.recordLoad('not-installed:1b', 3_000);
    expect(ollamaProbe.current().loadBytesPerSecond).toBeUndefined();
    ollamaProbe.recordLoad('qwen2.5:7b', 2_000);
    expect(ollamaProbe.current().loadBytesPerSecond).toBe(Math.round(size / 2));
    ollamaProbe.recordLoad('qwen2.5:7b', 1_000);
    expect(ollamaProbe.current().loadBytesPerSecond).toBe(Math.round((size / 2 + size) / 2));
    expect(Value.Check(OllamaState, ollamaProbe.current())).toBe(true);
  });

  it('keeps a bounded moving average of tokens/s per model', () => {
    const ollamaProbe = probe({ url: 'http://127.0.0.1:9', intervalMs: 60_000, tokensPerSecondSmoothing: 0.5 });
    ollamaProbe.recordGeneration('llama3.2:1b', 100, 2e9);
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'llama3.2:1b': 50 });
    ollamaProbe.recordGeneration('llama3.2:1b', 100, 1e9);
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'llama3.2:1b': 75 });
    // Figures that cannot be a measurement are ignored.
    ollamaProbe.recordGeneration('llama3.2:1b', 0, 1e9);
    ollamaProbe.recordGeneration('llama3.2:1b', 10, 0);
    ollamaProbe.recordGeneration('llama3.2:1b', Number.NaN, 1e9);
    ollamaProbe.recordGeneration('', 10, 1e9);
    expect(ollamaProbe.current().tokensPerSecond).toEqual({ 'llama3.2:1b': 75 });
    ollamaProbe.recordGeneration('phi3', 30, 1e9);
    expect(ollamaProbe.current().tokensPerSecond['phi3:latest']).toBe(30);
    for (let index = 0; index < limits.modelsPerNodeMax + 10; index++) ollamaProbe.recordGeneration(`model-${index}:1b`, 10, 1e9);
    const speeds = ollamaProbe.current().tokensPerSecond;
    expect(Object.keys(speeds)).toHaveLength(limits.modelsPerNodeMax);
    expect(speeds['llama3.2:1b']).toBeUndefined();
    expect(speeds[`model-${limits.modelsPerNodeMax + 9}:1b`]).toBe(10);
    expect(Value.Check(OllamaState, ollamaProbe.current())).toBe(true);
  });

  it('carries measured speeds while Ollama is unreachable', async () => {
    const ollamaProbe = probe({ url: 'http://127.0.0.1:9', intervalMs: 60_000, backoffInitialMs: 60_000 });
    ollamaProbe.recordGeneration('qwen2.5:7b', 40, 1e9);
    const state = await ollamaProbe.refresh();
    expect(state.reachable).toBe(false);
    expect(state.tokensPerSecond).toEqual({ 'qwen2.5:7b': 40 });
  });

  it('computes backoff delays and expiry times as documented', () => {
    const options = { intervalMs: 2000, backoffInitialMs: 1000, backoffMaxMs: 30_000 };
    expect([0, 1, 2, 3, 4, 5, 6, 7, 100].map((failures) => backoffDelayMs(failures, options))).toEqual([2000, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(expiryFrom('2026-01-01T00:05:00.000-00:00', now)).toBe('2026-01-01T00:05:00.000Z');
    expect(expiryFrom('2318-02-01T00:00:00Z', now)).toBeNull();
    expect(expiryFrom('0001-01-01T00:00:00Z', now)).toBeNull();
    expect(expiryFrom('not a date', now)).toBeNull();
    expect(expiryFrom(undefined, now)).toBeNull();
  });

  it('asks /api/show once per model digest and reports what Ollama says each model can do', async () => {
    const server = await standin({ models: [{ name: 'qwen2.5:7b', capabilities: ['completion', 'tools'] }, 'nomic-embed-text', 'llava:7b'] });
    const shows: string[] = [];
    const countingFetch: typeof fetch = (input, init) => {
      if (String(input).endsWith('/api/show')) shows.push(String(init?.body));
      return fetch(input, init);
    };
    const ollamaProbe = probe({ url: server.url, intervalMs: 60_000, fetch: countingFetch });
    await ollamaProbe.start();
    await ollamaProbe.refresh();
    await ollamaProbe.refresh();
    expect(shows).toHaveLength(3);
    expect(ollamaProbe.modelCapabilities('qwen2.5:7b')).toEqual(['completion', 'tools']);
    expect(ollamaProbe.modelCapabilities('nomic-embed-text')).toEqual(['embedding']);
    expect(ollamaProbe.modelCapabilities('llava:7b')).toEqual(['completion', 'vision']);
    expect(ollamaProbe.modelCapabilities('absent:1b')).toBeNull();
    // A model that is gone is forgotten; a new one is asked about.
    server.setModels(['qwen2.5:7b', 'gemma3:4b']);
    await ollamaProbe.refresh();
    expect(shows).toHaveLength(4);
    expect(ollamaProbe.modelCapabilities('nomic-embed-text')).toBeNull();
    expect(ollamaProbe.modelCapabilities('gemma3:4b')).toEqual(['completion']);
  });
});
