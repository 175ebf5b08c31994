// Classification of Ollama failures (what a retry can fix), usage from the final chunk,
// keep_alive lifted out of the options, the early speed reading of a streaming generation,
// and text in whole characters when Ollama's chunks split surrogate pairs, to the end of a
// finished, broken or aborted stream and at the output bound (against the Ollama stand-in
// over HTTP).
import { describe, expect, it } from 'vitest';
import { taskOutputBytesMax } from '../../protocol/limits.ts';
import { splitJsonTokens, standinJsonText } from '../../tests/ollama-standin/catalog.ts';
import { startStandin } from '../../tests/ollama-standin/server.ts';
import { GenerationError, classifyGenerationError, runGeneration, splitKeepAlive, usageFromFinal, type GenerationRequest } from './generation.ts';

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

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

describe('runGeneration text in whole characters', () => {
  const model = 'llama3.2:1b';
  // The stand-in streams JSON output in 4-unit pieces: this one cuts the family emoji
  // between the halves of 👩 (piece 3 ends on \ud83d), and 😀 and 𠀀 elsewhere.
  const mood = 'am 👨‍👩‍👧‍👦 and 😀 in 网格 𠀀!';
  const format = { type: 'object', properties: { mood: { const: mood } } };
  const json = JSON.stringify({ mood });
  const request = (overrides: Partial<GenerationRequest> = {}): GenerationRequest => ({
    model, prompt: 'mood?', messages: null, system: null, options: null, format, keepAlive: null, ...overrides,
  });

  it('sees the stand-in split a pair, so the cases below test what they mean to', () => {
    const pieces = splitJsonTokens(standinJsonText(model, 'mood?', format));
    expect(pieces.join('')).toBe(json);
    expect(pieces[3]).toMatch(loneSurrogate);
    expect(pieces[3]!.endsWith('\ud83d')).toBe(true);
  });

  it('streams no lone surrogate, and the output is the deltas joined, for generate and chat', async () => {
    const standin = await startStandin({ models: [model], tokensPerSecond: 2_000, coldLoadMs: 0, logFile: null });
    try {
      for (const overrides of [{}, { prompt: null, messages: [{ role: 'user' as const, content: 'mood?' }] }]) {
        const deltas: string[] = [];
        const result = await runGeneration(request(overrides), { ollamaUrl: standin.url, signal: new AbortController().signal, timeoutMs: 10_000, onText: (text) => deltas.push(text) });
        for (const delta of deltas) expect(delta, JSON.stringify(delta)).not.toMatch(loneSurrogate);
        expect(deltas.join('')).toBe(result.output);
        expect(result.output).toBe(json);
        expect(result.outputTruncated).toBe(false);
      }
    } finally {
      await standin.close();
    }
  });

  it('ends a finished stream cut after a high surrogate with U+FFFD, in the deltas and the output alike', async () => {
    const standin = await startStandin({ models: [model], tokensPerSecond: 2_000, coldLoadMs: 0, logFile: null });
    try {
      const deltas: string[] = [];
      // num_predict 4: the answer stops after the piece that ends on \ud83d.
      const result = await runGeneration(request({ options: { num_predict: 4 } }), { ollamaUrl: standin.url, signal: new AbortController().signal, timeoutMs: 10_000, onText: (text) => deltas.push(text) });
      expect(deltas.at(-1)).toBe('\uFFFD');
      for (const delta of deltas) expect(delta).not.toMatch(loneSurrogate);
      expect(result.output).toBe(`${json.slice(0, 15)}\uFFFD`);
      expect(deltas.join('')).toBe(result.output);
    } finally {
      await standin.close();
    }
  });

  it('flushes a held half as U+FFFD when the connection breaks or the generation is aborted there', async () => {
    const standin = await startStandin({ models: [model], tokensPerSecond: 50, coldLoadMs: 0, logFile: null });
    try {
      standin.breakNext(1, 4);
      const broken: string[] = [];
      const failure = await runGeneration(request(), { ollamaUrl: standin.url, signal: new AbortController().signal, timeoutMs: 10_000, onText: (text) => broken.push(text) })
        .catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(GenerationError);
      expect(broken.join('')).toBe(`${json.slice(0, 15)}\uFFFD`);
      for (const delta of broken) expect(delta).not.toMatch(loneSurrogate);

      // Aborted once the piece ending on \ud83d arrived (its 👨‍ part was given out); the next comes 20 ms later.
      const controller = new AbortController();
      const aborted: string[] = [];
      const reason = new Error('cancelled');
      const outcome = await runGeneration(request(), {
        ollamaUrl: standin.url, signal: controller.signal, timeoutMs: 10_000,
        onText: (text) => {
          aborted.push(text);
          if (text.includes('👨')) controller.abort(reason);
        },
      }).catch((error: unknown) => error);
      expect(outcome).toBe(reason);
      expect(aborted.join('')).toBe(`${json.slice(0, 15)}\uFFFD`);
      for (const delta of aborted) expect(delta).not.toMatch(loneSurrogate);
    } finally {
      await standin.close();
    }
  });

  it('cuts an output over the bound between characters, as a start of the deltas joined', async () => {
    const standin = await startStandin({ models: [model], tokensPerSecond: 1_000_000, coldLoadMs: 0, logFile: null });
    try {
      // {"mood":"ab then 4-byte emoji: the bound falls one byte into an emoji.
      const long = `ab${'😀'.repeat(taskOutputBytesMax / 4)}`;
      expect((taskOutputBytesMax - Buffer.byteLength('{"mood":"ab')) % 4).toBe(1);
      const deltas: string[] = [];
      const result = await runGeneration(request({ format: { type: 'object', properties: { mood: { const: long } } } }), {
        ollamaUrl: standin.url, signal: new AbortController().signal, timeoutMs: 30_000, onText: (text) => deltas.push(text),
      });
      const streamed = deltas.join('');
      expect(streamed).toBe(JSON.stringify({ mood: long }));
      expect(result.outputTruncated).toBe(true);
      expect(result.output).not.toMatch(loneSurrogate);
      expect(streamed.startsWith(result.output)).toBe(true);
      expect(Buffer.byteLength(result.output)).toBe(taskOutputBytesMax - 1);
      for (const delta of deltas) expect(delta).not.toMatch(loneSurrogate);
    } finally {
      await standin.close();
    }
  }, 30_000);
});
