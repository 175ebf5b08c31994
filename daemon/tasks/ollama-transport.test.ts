// The `ollama` client on the lean transport, against the Ollama stand-in over real HTTP:
// streamed answers identical to fetch's, aborts that stop the generation on the server,
// errors shaped as fetch's (HTTP status, refused connection, a connection cut mid-stream).
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Ollama } from 'ollama';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { ollamaFetch } from './ollama-transport.ts';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function standin(): Promise<Standin> {
  const server = await startStandin({ tokensPerSecond: 2_000, coldLoadMs: 0, models: ['llama3.2:1b'] });
  cleanups.push(() => server.close());
  return server;
}

async function generateText(client: Ollama, prompt: string): Promise<{ text: string; final: Record<string, unknown> | null }> {
  let text = '';
  let final: Record<string, unknown> | null = null;
  for await (const chunk of await client.generate({ model: 'llama3.2:1b', prompt, stream: true, options: { num_predict: 40 } })) {
    text += chunk.response;
    if (chunk.done) final = chunk as unknown as Record<string, unknown>;
  }
  return { text, final };
}

describe('ollamaFetch', () => {
  it('streams the same answer as fetch, on reused connections', async () => {
    const server = await standin();
    const lean = await generateText(new Ollama({ host: server.url, fetch: ollamaFetch }), 'same answer');
    const viaFetch = await generateText(new Ollama({ host: server.url, fetch }), 'same answer');
    expect(lean.text).toBe(viaFetch.text);
    expect(lean.text.length).toBeGreaterThan(0);
    expect(lean.final?.eval_count).toBe(40);
    const again = await generateText(new Ollama({ host: server.url, fetch: ollamaFetch }), 'second');
    expect(again.final?.done).toBe(true);
    expect(server.generations().map((generation) => generation.outcome)).toEqual(['completed', 'completed', 'completed']);
  });

  it('aborts with the signal\'s reason before and during the answer, and the server stops generating', async () => {
    const server = await standin();
    server.setTokensPerSecond(50);
    const controller = new AbortController();
    const client = new Ollama({ host: server.url, fetch: (input, init) => ollamaFetch(input, { ...init, signal: controller.signal }) });
    const stream = await client.generate({ model: 'llama3.2:1b', prompt: 'long', stream: true, options: { num_predict: 400 } });
    const reason = new Error('cancelled by the test');
    let chunks = 0;
    await expect((async () => {
      for await (const chunk of stream) {
        chunks += chunk.response === '' ? 0 : 1;
        if (chunks === 3) controller.abort(reason);
      }
    })()).rejects.toThrow('cancelled by the test');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(server.generations()[0]?.outcome).toBe('aborted');
    const early = new AbortController();
    early.abort(new Error('never sent'));
    await expect(ollamaFetch(`${server.url}/api/tags`, { signal: early.signal })).rejects.toThrow('never sent');
  });

  it('fails as fetch does: HTTP errors with their status, a refused connection with its code', async () => {
    const server = await standin();
    const client = new Ollama({ host: server.url, fetch: ollamaFetch });
    await expect(client.generate({ model: 'no-such-model:1b', prompt: 'x', stream: false })).rejects.toMatchObject({ status_code: 404 });
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await ollamaFetch(`http://127.0.0.1:${port}/api/tags`).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(TypeError);
    expect(((refused as TypeError).cause as { code?: string }).code).toBe('ECONNREFUSED');
  });

  it('ends a stream cut by the server with an error, not a silent end', async () => {
    const server = await standin();
    server.breakNext(1, 5);
    const client = new Ollama({ host: server.url, fetch: ollamaFetch });
    await expect(generateText(client, 'cut')).rejects.toThrow();
  });
});
