// The stand-in driven by the real `ollama` client over HTTP: the shapes hivemesh relies on,
// deterministic content, cold and warm loads, keep-alive, aborts, errors and the knobs.
import { afterEach, describe, expect, it } from 'vitest';
import { Ollama } from 'ollama';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStandin, parseKeepAlive, type Standin, type StandinOptions } from './server.ts';
import { renderChatPrompt, renderGeneratePrompt, standinEmbedding, standinText } from './catalog.ts';
import { readStandinLog, summarizeGenerations } from './events.ts';
import { StandinControl } from './control.ts';

const running: Standin[] = [];

async function standin(options: StandinOptions = {}): Promise<{ server: Standin; client: Ollama }> {
  const server = await startStandin({ tokensPerSecond: 1000, coldLoadMs: 20, ...options });
  running.push(server);
  return { server, client: new Ollama({ host: server.url }) };
}

afterEach(async () => {
  await Promise.all(running.splice(0).map((server) => server.close()));
});

async function waitFor(condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('ollama stand-in', () => {
  it('lists installed models with Ollama details and reports its version', async () => {
    const { client } = await standin({ models: ['llama3.2:1b', 'qwen2.5:7b', 'nomic-embed-text'] });
    const list = await client.list();
    expect(list.models.map((model) => model.name)).toEqual(['llama3.2:1b', 'qwen2.5:7b', 'nomic-embed-text:latest']);
    const qwen = list.models[1];
    expect(qwen?.model).toBe('qwen2.5:7b');
    expect(qwen?.size).toBeGreaterThan(4e9);
    expect(qwen?.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(Number.isNaN(Date.parse(String(qwen?.modified_at)))).toBe(false);
    expect(qwen?.details).toMatchObject({ format: 'gguf', family: 'qwen', parameter_size: '7B', quantization_level: 'Q4_K_M' });
    expect(list.models[2]?.details.family).toBe('nomic-bert');
    expect((await client.version()).version).toMatch(/^\d+\.\d+\.\d+/);
    const show = await client.show({ model: 'nomic-embed-text' });
    expect(show.capabilities).toEqual(['embedding']);
  });

  it('streams deterministic tokens with Ollama final statistics in nanoseconds', async () => {
    const { server, client } = await standin({ tokensPerSecond: 200, responseTokens: 10 });
    const prompt = 'Why is the sky blue?';
    const pieces: string[] = [];
    let final: Awaited<ReturnType<typeof client.generate>> | undefined;
    for await (const chunk of await client.generate({ model: 'llama3.2:1b', prompt, stream: true })) {
      if (chunk.done) final = chunk;
      else pieces.push(chunk.response ?? '');
    }
    expect(pieces).toHaveLength(10);
    expect(pieces.join('')).toBe(standinText('llama3.2:1b', renderGeneratePrompt({ prompt }), 10));
    expect(final).toMatchObject({ done: true, done_reason: 'stop', eval_count: 10, model: 'llama3.2:1b' });
    // 10 tokens at 200 tokens/s take about 50 ms: reported in ns, as Ollama does.
    expect(final?.eval_duration).toBeGreaterThan(40e6);
    expect(final?.eval_duration).toBeLessThan(1e9);
    expect(final?.total_duration).toBeGreaterThan(final?.eval_duration ?? 0);
    expect(final?.prompt_eval_count).toBeGreaterThan(0);
    expect(server.generations()).toMatchObject([{ id: 1, endpoint: 'generate', model: 'llama3.2:1b', outcome: 'completed', tokens: 10, aborted: false, stream: true }]);
  });

  it('answers stream:false in one object, honours num_predict, system, raw and stop', async () => {
    const { client } = await standin();
    const limited = await client.generate({ model: 'llama3.2:1b', prompt: 'count', options: { num_predict: 5 } });
    expect(limited.response).toBe(standinText('llama3.2:1b', 'count', 5));
    expect(limited).toMatchObject({ done: true, done_reason: 'length', eval_count: 5 });
    const withSystem = await client.generate({ model: 'llama3.2:1b', prompt: 'count', system: 'be brief', options: { num_predict: 5 } });
    expect(withSystem.response).toBe(standinText('llama3.2:1b', 'be brief\ncount', 5));
    const raw = await client.generate({ model: 'llama3.2:1b', prompt: 'count', system: 'be brief', raw: true, options: { num_predict: 5 } });
    expect(raw.response).toBe(limited.response);
    const full = standinText('llama3.2:1b', 'count', 5);
    const stopWord = full.split(' ')[2] ?? '';
    const stopped = await client.generate({ model: 'llama3.2:1b', prompt: 'count', options: { num_predict: 5, stop: [` ${stopWord}`] } });
    const stoppedText = stopped.response ?? '';
    expect(full.startsWith(stoppedText)).toBe(true);
    expect(stoppedText.length).toBeLessThan(full.length);
    expect(stopped.done_reason).toBe('stop');
  });

  it('chats, streaming and not, seeded by every message', async () => {
    const { client } = await standin({ responseTokens: 6, models: ['qwen2.5:7b'] });
    const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hello' }];
    const expected = standinText('qwen2.5:7b', renderChatPrompt(messages), 6);
    const whole = await client.chat({ model: 'qwen2.5:7b', messages, stream: false });
    expect(whole.message).toEqual({ role: 'assistant', content: expected });
    expect(whole.eval_count).toBe(6);
    let streamed = '';
    for await (const chunk of await client.chat({ model: 'qwen2.5:7b', messages, stream: true })) streamed += chunk.message.content;
    expect(streamed).toBe(expected);
  }, 10_000);

  it('answers format:"json" and a JSON schema with parseable JSON', async () => {
    const { client } = await standin();
    const json = await client.generate({ model: 'llama3.2:1b', prompt: 'x', format: 'json' });
    expect(JSON.parse(json.response ?? '')).toHaveProperty('response');
    const schema = { type: 'object', properties: { score: { type: 'integer' }, tags: { type: 'array', items: { type: 'string' } }, ok: { type: 'boolean' } } };
    const shaped = await client.chat({ model: 'llama3.2:1b', messages: [{ role: 'user', content: 'x' }], format: schema });
    const value = JSON.parse(shaped.message.content) as { score: unknown; tags: unknown; ok: unknown };
    expect(Number.isInteger(value.score)).toBe(true);
    expect(Array.isArray(value.tags)).toBe(true);
    expect(typeof value.ok).toBe('boolean');
  });

  it('embeds deterministically into unit vectors and refuses to generate with an embedding model', async () => {
    const { client } = await standin({ models: ['all-minilm', 'llama3.2:1b'] });
    const result = await client.embed({ model: 'all-minilm', input: ['alpha', 'beta', 'alpha'] });
    expect(result.embeddings).toHaveLength(3);
    expect(result.embeddings[0]).toEqual(result.embeddings[2]);
    expect(result.embeddings[0]).not.toEqual(result.embeddings[1]);
    expect(result.embeddings[0]).toEqual(standinEmbedding('all-minilm', 'alpha', 384));
    const norm = Math.sqrt((result.embeddings[1] ?? []).reduce((sum, value) => sum + value * value, 0));
    expect(norm).toBeCloseTo(1, 6);
    await expect(client.generate({ model: 'all-minilm', prompt: 'hi' })).rejects.toMatchObject({ status_code: 400, message: '"all-minilm:latest" does not support generate' });
  });

  it('loads cold once, then answers warm; /api/ps shows the model with VRAM and expiry', async () => {
    const { server, client } = await standin({ coldLoadMs: 150, vramBytes: 8 * 1024 ** 3, models: ['qwen2.5:7b'] });
    expect((await client.ps()).models).toEqual([]);
    const cold = await client.generate({ model: 'qwen2.5:7b', prompt: 'a', options: { num_predict: 2 } });
    const warm = await client.generate({ model: 'qwen2.5:7b', prompt: 'b', options: { num_predict: 2 } });
    expect(cold.load_duration).toBeGreaterThanOrEqual(140e6);
    expect(warm.load_duration).toBeLessThan(20e6);
    expect(server.generations().map((record) => record.coldLoad)).toEqual([true, false]);
    const ps = await client.ps();
    expect(ps.models).toHaveLength(1);
    const loaded = ps.models[0];
    expect(loaded?.name).toBe('qwen2.5:7b');
    expect(loaded?.size_vram).toBe(loaded?.size);
    const expiresInMs = Date.parse(String(loaded?.expires_at)) - Date.now();
    expect(expiresInMs).toBeGreaterThan(4 * 60_000);
    expect(expiresInMs).toBeLessThanOrEqual(5 * 60_000);
  });

  it('unloads at keep-alive expiry, at once with keep_alive 0, never with a negative one', async () => {
    const { client, server } = await standin({ models: ['llama3.2:1b', 'qwen2.5:7b', 'phi3:3.8b'] });
    await client.generate({ model: 'llama3.2:1b', prompt: 'a', keep_alive: '300ms', options: { num_predict: 1 } });
    await client.generate({ model: 'qwen2.5:7b', prompt: 'a', keep_alive: 0, options: { num_predict: 1 } });
    await client.generate({ model: 'phi3:3.8b', prompt: 'a', keep_alive: -1, options: { num_predict: 1 } });
    const names = async () => (await client.ps()).models.map((model) => model.name).sort();
    expect(await names()).toEqual(['llama3.2:1b', 'phi3:3.8b']);
    const forever = (await client.ps()).models.find((model) => model.name === 'phi3:3.8b');
    expect(new Date(String(forever?.expires_at)).getUTCFullYear()).toBeGreaterThan(2200);
    expect(server.loadedModels().find((model) => model.name === 'phi3:3.8b')?.expiresAt).toBeNull();
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect(await names()).toEqual(['phi3:3.8b']);
    // An empty prompt with keep_alive 0 unloads, as `ollama stop` does.
    const unload = await client.generate({ model: 'phi3:3.8b', prompt: '', keep_alive: 0 });
    expect(unload.done_reason).toBe('unload');
    expect(await names()).toEqual([]);
  });

  it('aborts a generation when the client disconnects mid-stream, and logs it', async () => {
    const logFile = join(mkdtempSync(join(tmpdir(), 'standin-')), 'events.jsonl');
    const { server, client } = await standin({ tokensPerSecond: 100, logFile });
    const stream = await client.generate({ model: 'llama3.2:1b', prompt: 'long', stream: true, options: { num_predict: 1000 } });
    let received = 0;
    try {
      for await (const chunk of stream) {
        if (!chunk.done && ++received === 3) stream.abort();
      }
    } catch (error) {
      expect((error as Error).name).toBe('AbortError');
    }
    await waitFor(() => server.generations()[0]?.outcome === 'aborted');
    const tokensAtAbort = server.generations()[0]?.tokens ?? 0;
    expect(tokensAtAbort).toBeGreaterThanOrEqual(3);
    // Well short of the 1000 asked for, even on a busy machine.
    expect(tokensAtAbort).toBeLessThan(200);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(server.generations()[0]).toMatchObject({ aborted: true, tokens: tokensAtAbort });
    const counts = summarizeGenerations(readStandinLog(logFile));
    expect(counts).toMatchObject({ started: 1, finished: 0, aborted: 1, running: 0, byModel: { 'llama3.2:1b': 1 } });
  });

  it('lets a model loaded for a request that went away expire like any idle one', async () => {
    const { server } = await standin({ coldLoadMs: 100, keepAliveMs: 200 });
    const request = fetch(`${server.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: 'llama3.2:1b', prompt: 'x' }), signal: AbortSignal.timeout(30) });
    await expect(request).rejects.toMatchObject({ name: 'TimeoutError' });
    await waitFor(() => server.loadedModels().length === 1);
    expect(server.loadedModels()[0]?.expiresAt).not.toBeNull();
    await waitFor(() => server.loadedModels().length === 0, 1000);
    expect(server.generations()).toMatchObject([{ outcome: 'aborted', tokens: 0 }]);
  });

  it('answers an unknown model with Ollama\'s 404 error', async () => {
    const { client } = await standin();
    await expect(client.generate({ model: 'mistral:7b', prompt: 'hi' })).rejects.toMatchObject({
      status_code: 404, message: 'model "mistral:7b" not found, try pulling it first',
    });
    await expect(client.chat({ model: 'mistral:7b', messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status_code: 404 });
    await expect(client.show({ model: 'mistral:7b' })).rejects.toMatchObject({ status_code: 404 });
  });

  it('pulls a model into the list and deletes it', async () => {
    const { client } = await standin();
    expect((await client.pull({ model: 'gemma3:4b' })).status).toBe('success');
    expect((await client.list()).models.map((model) => model.name)).toContain('gemma3:4b');
    await client.delete({ model: 'gemma3:4b' });
    expect((await client.list()).models.map((model) => model.name)).not.toContain('gemma3:4b');
    await expect(client.delete({ model: 'gemma3:4b' })).rejects.toMatchObject({ status_code: 404 });
  });

  it('makes requests beyond maxConcurrency wait for a slot', async () => {
    const { server, client } = await standin({ maxConcurrency: 1, tokensPerSecond: 200 });
    const first = client.generate({ model: 'llama3.2:1b', prompt: 'one', options: { num_predict: 10 } });
    const second = client.generate({ model: 'llama3.2:1b', prompt: 'two', options: { num_predict: 10 } });
    await Promise.all([first, second]);
    const [a, b] = server.generations();
    expect(b?.startedAt).toBeGreaterThanOrEqual(a?.finishedAt ?? Infinity);
  });

  it('fails the next requests on demand, hangs, cuts streams and changes speed', async () => {
    const { server, client } = await standin({ tokensPerSecond: 500 });
    server.failNext(2);
    await expect(client.generate({ model: 'llama3.2:1b', prompt: 'x' })).rejects.toMatchObject({ status_code: 500 });
    await expect(client.chat({ model: 'llama3.2:1b', messages: [{ role: 'user', content: 'x' }] })).rejects.toMatchObject({ status_code: 500 });
    // The knob is scoped to generation requests by default, so probes of /api/tags pass.
    expect((await client.list()).models).toHaveLength(1);
    expect((await client.generate({ model: 'llama3.2:1b', prompt: 'x', options: { num_predict: 1 } })).done).toBe(true);

    server.hang(true, { scope: 'all' });
    await expect(fetch(`${server.url}/api/version`, { signal: AbortSignal.timeout(200) })).rejects.toMatchObject({ name: 'TimeoutError' });
    server.hang(false);
    expect((await client.version()).version).toBeTruthy();

    server.breakNext(1, 3);
    const chunks: string[] = [];
    await expect((async () => {
      for await (const chunk of await client.generate({ model: 'llama3.2:1b', prompt: 'y', stream: true })) chunks.push(chunk.response ?? '');
    })()).rejects.toThrow();
    expect(chunks).toHaveLength(3);
    expect(server.generations().at(-1)).toMatchObject({ outcome: 'broken', aborted: true, tokens: 3 });

    server.setTokensPerSecond(50);
    const slow = await client.generate({ model: 'llama3.2:1b', prompt: 'z', options: { num_predict: 5 } });
    expect(slow.eval_duration).toBeGreaterThan(80e6);
    // The same knobs over HTTP, for tests in another process.
    const control = await fetch(`${server.url}/_standin/fail`, { method: 'POST', body: JSON.stringify({ count: 1, status: 503, scope: 'all' }) });
    expect(control.status).toBe(200);
    await expect(client.list()).rejects.toMatchObject({ status_code: 503 });
    const bad = await fetch(`${server.url}/_standin/fail`, { method: 'POST', body: JSON.stringify({ count: -1 }) });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ error: 'count must be a non-negative integer' });
  });

  it('evicts idle models for VRAM and offloads partly when busy models fill it', async () => {
    const { server, client } = await standin({ models: ['qwen2.5:7b', 'mistral:7b', 'llama3.2:1b'], vramBytes: 5e9, tokensPerSecond: 100 });
    await client.generate({ model: 'qwen2.5:7b', prompt: 'a', options: { num_predict: 1 } });
    await client.generate({ model: 'mistral:7b', prompt: 'a', options: { num_predict: 1 } });
    expect((await client.ps()).models.map((model) => model.name)).toEqual(['mistral:7b']);
    // While mistral streams it cannot be evicted: qwen gets what VRAM is left, the rest on CPU.
    const stream = await client.generate({ model: 'mistral:7b', prompt: 'long', stream: true, options: { num_predict: 1000 } });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    await client.generate({ model: 'qwen2.5:7b', prompt: 'b', options: { num_predict: 1 } });
    const qwen = (await client.ps()).models.find((model) => model.name === 'qwen2.5:7b');
    expect(qwen?.size_vram).toBeGreaterThan(0);
    expect(qwen?.size_vram).toBeLessThan(qwen?.size ?? 0);
    expect(server.loadedModels().reduce((sum, model) => sum + model.sizeVramBytes, 0)).toBeLessThanOrEqual(5e9);
    stream.abort();
    await iterator.next().catch(() => undefined);
  });

  it('answers 503 beyond the wait queue, and close() aborts what is in flight', async () => {
    const { server, client } = await standin({ maxConcurrency: 1, maxQueue: 1, tokensPerSecond: 100 });
    const stream = await client.generate({ model: 'llama3.2:1b', prompt: 'long', stream: true, options: { num_predict: 1000 } });
    const iterator = stream[Symbol.asyncIterator]();
    await iterator.next();
    const queued = client.generate({ model: 'llama3.2:1b', prompt: 'queued', options: { num_predict: 1 } });
    await waitFor(() => server.generationsTotal() === 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await expect(client.generate({ model: 'llama3.2:1b', prompt: 'third', options: { num_predict: 1 } })).rejects.toMatchObject({
      status_code: 503, message: 'server busy, please try again.  maximum pending requests exceeded',
    });
    await server.close();
    await expect(queued).rejects.toThrow();
    // Chunks already received are still read; then the cut connection surfaces.
    await expect((async () => {
      for (let chunk = await iterator.next(); !chunk.done; chunk = await iterator.next()) expect(chunk.value.done).toBe(false);
    })()).rejects.toThrow();
    expect(server.generations()).toMatchObject([{ outcome: 'aborted', aborted: true }]);
  });

  it('hangs only generation requests by default, and serves the legacy /api/embeddings', async () => {
    const { server, client } = await standin({ models: ['all-minilm', 'llama3.2:1b'] });
    server.hang(true);
    const hung = fetch(`${server.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: 'llama3.2:1b', prompt: 'x' }), signal: AbortSignal.timeout(150) });
    expect((await client.list()).models).toHaveLength(2);
    await expect(hung).rejects.toMatchObject({ name: 'TimeoutError' });
    server.reset();
    const legacy = await client.embeddings({ model: 'all-minilm', prompt: 'alpha' });
    expect(legacy.embedding).toEqual(standinEmbedding('all-minilm', 'alpha', 384));
    expect(server.embedRequests()).toBe(1);
  });

  it('serves the OpenAI-compatible endpoints as Ollama does: models, chat, completions, embeddings, errors', async () => {
    const { server } = await standin({ models: ['llama3.2:1b', 'all-minilm'], responseTokens: 6 });
    const post = (path: string, body: unknown) => fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const models = await (await fetch(`${server.url}/v1/models`)).json() as { data: Array<{ id: string; object: string }> };
    expect(models.data.map((model) => model.id)).toEqual(['llama3.2:1b', 'all-minilm:latest']);
    expect(await (await fetch(`${server.url}/v1/models/llama3.2:1b`)).json()).toMatchObject({ id: 'llama3.2:1b', object: 'model', owned_by: 'library' });

    const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Hi there' }] }];
    const expected = standinText('llama3.2:1b', renderChatPrompt([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }]), 6);
    const whole = await (await post('/v1/chat/completions', { model: 'llama3.2:1b', messages })).json();
    expect(whole).toMatchObject({
      object: 'chat.completion', model: 'llama3.2:1b',
      choices: [{ index: 0, message: { role: 'assistant', content: expected }, finish_reason: 'stop' }],
      usage: { completion_tokens: 6 },
    });
    const limited = await (await post('/v1/chat/completions', { model: 'llama3.2:1b', messages, max_tokens: 2 })).json() as { choices: Array<{ finish_reason: string }>; usage: { completion_tokens: number } };
    expect(limited.choices[0]?.finish_reason).toBe('length');
    expect(limited.usage.completion_tokens).toBe(2);

    const streamed = await post('/v1/chat/completions', { model: 'llama3.2:1b', messages, stream: true, stream_options: { include_usage: true } });
    expect(streamed.headers.get('content-type')).toBe('text/event-stream');
    const events = (await streamed.text()).split('\n\n').filter((event) => event !== '').map((event) => event.replace(/^data: /, ''));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((event) => JSON.parse(event) as { object: string; choices: Array<{ delta: { content: string }; finish_reason: string | null }>; usage?: { completion_tokens: number } });
    expect(chunks.every((chunk) => chunk.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks.map((chunk) => chunk.choices[0]?.delta.content ?? '').join('')).toBe(expected);
    expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.at(-1)?.usage?.completion_tokens).toBe(6);

    const json = await (await post('/v1/chat/completions', { model: 'llama3.2:1b', messages, response_format: { type: 'json_object' } })).json() as { choices: Array<{ message: { content: string } }> };
    expect(JSON.parse(json.choices[0]?.message.content ?? '')).toHaveProperty('response');

    const completion = await (await post('/v1/completions', { model: 'llama3.2:1b', prompt: 'Once upon', max_tokens: 4 })).json();
    expect(completion).toMatchObject({ object: 'text_completion', choices: [{ text: standinText('llama3.2:1b', 'Once upon', 4), finish_reason: 'length' }] });

    const embeddings = await (await post('/v1/embeddings', { model: 'all-minilm', input: ['alpha', 'beta'] })).json() as { object: string; data: Array<{ embedding: number[]; index: number }> };
    expect(embeddings.object).toBe('list');
    expect(embeddings.data.map((entry) => entry.index)).toEqual([0, 1]);
    expect(embeddings.data[0]?.embedding).toEqual(standinEmbedding('all-minilm', 'alpha', 384));

    const missing = await post('/v1/chat/completions', { model: 'mistral:7b', messages });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: { message: 'model "mistral:7b" not found, try pulling it first', type: 'api_error', param: null, code: null } });
    const bad = await post('/v1/chat/completions', { model: 'llama3.2:1b', messages: [] });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { type: 'invalid_request_error', message: 'messages must be a non-empty array' } });
    expect(server.generations().map((record) => record.endpoint)).toEqual(['openai-chat', 'openai-chat', 'openai-chat', 'openai-chat', 'openai-completion']);
  });

  it('parses keep_alive as Ollama does', () => {
    expect(parseKeepAlive(undefined)).toBeUndefined();
    expect(parseKeepAlive(30)).toBe(30_000);
    expect(parseKeepAlive('30')).toBe(30_000);
    expect(parseKeepAlive('5m')).toBe(300_000);
    expect(parseKeepAlive('1h30m')).toBe(5_400_000);
    expect(parseKeepAlive('250ms')).toBe(250);
    expect(parseKeepAlive(0)).toBe(0);
    expect(parseKeepAlive(-1)).toBeNull();
    expect(parseKeepAlive('-1m')).toBeNull();
    expect(() => parseKeepAlive('soon')).toThrow('time: invalid duration "soon"');
  });

  it('runs as a process: prints its URL, logs to a file, stops on SIGTERM', async () => {
    const logFile = join(mkdtempSync(join(tmpdir(), 'standin-')), 'events.jsonl');
    const child = spawn(process.execPath, ['tests/ollama-standin/main.ts', '--port', '0', '--models', 'llama3.2:1b,qwen2.5:7b', '--tokens-per-second', '1000', '--cold-load-ms', '10', '--log-file', logFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let output = '';
        child.stdout.on('data', (data: Buffer) => {
          output += data.toString();
          if (output.includes('\n')) resolve(output.trim());
        });
        child.once('exit', (code) => reject(new Error(`stand-in exited with ${code}`)));
        setTimeout(() => reject(new Error('stand-in did not print its URL')), 10_000).unref();
      });
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const client = new Ollama({ host: url });
      await client.generate({ model: 'qwen2.5:7b', prompt: 'hello', options: { num_predict: 3 } });
      expect(summarizeGenerations(readStandinLog(logFile))).toMatchObject({ started: 1, finished: 1, byModel: { 'qwen2.5:7b': 1 } });
      // The knobs over HTTP, as a multi-process suite drives them.
      const control = new StandinControl(url);
      expect((await control.generations()).map((record) => record.model)).toEqual(['qwen2.5:7b']);
      expect((await control.setModels(['mistral:7b'])).installed).toEqual(['mistral:7b']);
      expect((await client.list()).models.map((model) => model.name)).toEqual(['mistral:7b']);
      await control.failNext(1, { status: 503 });
      await expect(client.generate({ model: 'mistral:7b', prompt: 'x' })).rejects.toMatchObject({ status_code: 503 });
      await control.setTokensPerSecond(20, 'mistral:7b');
      const slow = await client.generate({ model: 'mistral:7b', prompt: 'x', options: { num_predict: 3 } });
      expect(slow.eval_duration).toBeGreaterThan(100e6);
      expect((await control.state()).generationsTotal).toBe(2);
      await expect(control.breakNext(-1, 0)).rejects.toThrow(`stand-in at ${url} refused POST /_standin/break: count must be a non-negative integer`);
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 15_000);
});
