// Classification of Ollama failures (what a retry can fix), usage from the final chunk,
// keep_alive lifted out of the options, and the early speed reading of a streaming
// generation (against the Ollama stand-in over HTTP).
import { describe, expect, it } from 'vitest';
import { startStandin } from '../../tests/ollama-standin/server.ts';
import { classifyGenerationError, runGeneration, splitKeepAlive, usageFromFinal } from './generation.ts';

const url = 'http://127.0.0.1:11434';

function responseError(message: string, status: number): Error {
  return Object.assign(new Error(message), { name: 'ResponseError', status_code: status, error: message });
}

function networkError(code: string): Error {
  return new TypeError('fetch failed', { cause: Object.assign(new Error(`connect ${code}`), { code }) });
}

describe('classifyGenerationError', () => {
  it('treats unknown models and invalid requests as permanent, with advice', () => {
    const missing = classifyGenerationError(responseError('model "x" not found, try pulling it first', 404), url, 'POST /api/generate', 1000);
    expect(missing.retryable).toBe(false);
    expect(missing.message).toMatch(/HTTP 404.*not found.*ollama pull/);
    expect(classifyGenerationError(responseError('invalid options: num_ctx', 400), url, 'POST /api/chat', 1000).retryable).toBe(false);
  });

  it('treats server errors, overload, refused and cut connections as retryable', () => {
    expect(classifyGenerationError(responseError('server busy', 503), url, 'POST /api/generate', 1000).retryable).toBe(true);
    expect(classifyGenerationError(responseError('internal', 500), url, 'POST /api/generate', 1000).retryable).toBe(true);
    expect(classifyGenerationError(responseError('slow down', 429), url, 'POST /api/generate', 1000).retryable).toBe(true);
    const refused = classifyGenerationError(networkError('ECONNREFUSED'), url, 'POST /api/generate', 1000);
    expect(refused.retryable).toBe(true);
    expect(refused.message).toMatch(/connection refused.*ollama serve/);
    expect(classifyGenerationError(networkError('ECONNRESET'), url, 'POST /api/generate', 1000).retryable).toBe(true);
    const cut = classifyGenerationError(new Error('Did not receive done or success response in stream.'), url, 'POST /api/generate', 1000);
    expect(cut.retryable).toBe(true);
    expect(cut.message).toMatch(/before the final chunk/);
  });

  it('reads an error line inside the stream by its wording', () => {
    expect(classifyGenerationError(new Error('model requires more system memory (9 GiB) than is available'), url, 'POST /api/chat', 1000).retryable).toBe(true);
    expect(classifyGenerationError(new Error('invalid format: expected "json" or a JSON schema'), url, 'POST /api/chat', 1000).retryable).toBe(false);
  });
});

describe('usageFromFinal', () => {
  it('turns nanoseconds into tokens/s and milliseconds, and ignores nonsense', () => {
    expect(usageFromFinal({ prompt_eval_count: 12, eval_count: 100, eval_duration: 2e9, load_duration: 1.5e9, total_duration: 4.25e9 }))
      .toEqual({ promptTokens: 12, completionTokens: 100, tokensPerSecond: 50, loadMs: 1500, totalMs: 4250 });
    expect(usageFromFinal({ eval_count: -3, eval_duration: Number.NaN })).toEqual({ promptTokens: 0, completionTokens: 0, tokensPerSecond: 0, loadMs: 0, totalMs: 0 });
  });
});

describe('splitKeepAlive', () => {
  it('moves keep_alive beside the options', () => {
    expect(splitKeepAlive({ temperature: 0.2, keep_alive: '10m' })).toEqual({ options: { temperature: 0.2 }, keepAlive: '10m' });
    expect(splitKeepAlive({ keep_alive: -1 })).toEqual({ options: null, keepAlive: -1 });
    expect(splitKeepAlive({ seed: 1 })).toEqual({ options: { seed: 1 }, keepAlive: null });
    expect(splitKeepAlive(null)).toEqual({ options: null, keepAlive: null });
  });
});

describe('runGeneration early speed', () => {
  it('reports one early reading close to the stand-in\'s speed, well before the end', async () => {
    const standin = await startStandin({ models: ['llama3.2:1b'], tokensPerSecond: 50, coldLoadMs: 0, logFile: null });
    try {
      const readings: Array<{ tokens: number; elapsedNs: number; at: number }> = [];
      const started = performance.now();
      const result = await runGeneration({
        model: 'llama3.2:1b', prompt: 'count slowly', messages: null, system: null, options: { num_predict: 40 }, format: null, keepAlive: null,
      }, {
        ollamaUrl: standin.url, signal: new AbortController().signal, timeoutMs: 10_000, onText: () => undefined,
        onEarlySpeed: (tokens, elapsedNs) => readings.push({ tokens, elapsedNs, at: performance.now() - started }),
      });
      const endedAt = performance.now() - started;
      expect(result.evalCount).toBe(40);
      expect(readings).toHaveLength(1);
      const speed = readings[0]!.tokens / (readings[0]!.elapsedNs / 1e9);
      expect(speed).toBeGreaterThan(25);
      expect(speed).toBeLessThan(100);
      // 40 tokens at 50/s take 800 ms; the reading comes after about 9 of them.
      expect(readings[0]!.at).toBeLessThan(endedAt / 2);
    } finally {
      await standin.close();
    }
  });
});
