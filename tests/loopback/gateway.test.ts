// The Ollama/OpenAI-compatible gateway over real daemons: two nodes, each with its own
// Ollama stand-in and different models. Clients talk only to node A; requests for a model
// only node B has are relayed over libp2p to B, which runs them on its stand-in. Checked:
// the real `ollama` npm client (model union, chat streaming and not, embeddings), OpenAI
// requests with fetch (chat streaming as SSE and not, /v1/models), unknown models in each
// API's error shape, 401 without a token, a client abort mid-stream stopping the
// generation on B's stand-in, B's heartbeat counting the relayed generation, and /metrics.
import { Ollama } from 'ollama';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePrometheusText, type Sample } from '../../daemon/metrics/parse.ts';
import { renderChatPrompt, standinText } from '../ollama-standin/catalog.ts';
import { readStandinLog, summarizeGenerations } from '../ollama-standin/events.ts';
import { startStandin, type Standin } from '../ollama-standin/server.ts';
import { agentsStatus, outputTails, prepareDaemons, startAll, writeClusterKey, type MeshDaemon } from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';
import { join } from 'node:path';
import { httpBodyBytesMax } from '../../protocol/limits.ts';

const modelsA = ['llama3.2:1b'];
const modelsB = ['qwen2.5:7b', 'all-minilm:latest'];
const onlyOnB = 'qwen2.5:7b';
const responseTokens = 24;

describe('gateway over two daemons (loopback)', () => {
  const group = new ProcessGroup();
  let standinA: Standin;
  let standinB: Standin;
  let nodeA: MeshDaemon;
  let nodeB: MeshDaemon;
  let client: Ollama;
  let logDir: string;

  const headers = () => ({ authorization: `Bearer ${nodeA.adminToken}`, 'content-type': 'application/json' });
  const post = (path: string, body: unknown, init: { signal?: AbortSignal; token?: string | null } = {}) => fetch(nodeA.apiUrl + path, {
    method: 'POST',
    headers: init.token === null ? { 'content-type': 'application/json' } : headers(),
    body: JSON.stringify(body),
    signal: init.signal ?? AbortSignal.timeout(20_000),
  });

  beforeAll(async () => {
    logDir = tempDir('gateway-logs');
    group.onCleanup(() => undefined);
    standinA = await startStandin({ models: modelsA, tokensPerSecond: 400, coldLoadMs: 20, responseTokens, logFile: join(logDir, 'a.jsonl') });
    standinB = await startStandin({ models: modelsB, tokensPerSecond: 400, coldLoadMs: 20, responseTokens, logFile: join(logDir, 'b.jsonl') });
    group.onCleanup(() => standinA.close());
    group.onCleanup(() => standinB.close());
    const secretFile = writeClusterKey(tempDir('gateway-key'));
    [nodeA, nodeB] = await prepareDaemons(group, [
      { name: 'gw-a', mdns: false, secretFile, ollamaUrl: standinA.url },
      { name: 'gw-b', mdns: false, secretFile, ollamaUrl: standinB.url },
    ], { bootstrapAll: true }) as [MeshDaemon, MeshDaemon];
    await startAll([nodeA, nodeB]);
    // Node A must see B alive with B's models before it can place anything there.
    await waitUntil('node A to see both nodes alive with their models', async () => {
      const nodes = (await agentsStatus(nodeA))?.nodes ?? [];
      const installed = nodes.filter((node) => node.state === 'alive' && node.ollama.reachable).flatMap((node) => node.models.installed.map((model) => model.name));
      return [...modelsA, ...modelsB].every((model) => installed.includes(model));
    }, 30_000, 200).catch((error: Error) => {
      throw new Error(`${error.message}\n${outputTails([nodeA, nodeB])}`);
    });
    client = new Ollama({ host: nodeA.apiUrl, headers: { Authorization: `Bearer ${nodeA.adminToken}` } });
  }, 60_000);

  afterAll(() => group.stopAll(), 30_000);

  it('lists the union of the cluster\'s models (ollama client, /api/tags) and /v1/models', async () => {
    const listed = await client.list();
    expect(listed.models.map((model) => model.name).sort()).toEqual([...modelsA, ...modelsB].sort());
    expect(listed.models.find((model) => model.name === onlyOnB)?.size).toBeGreaterThan(0);
    const response = await fetch(`${nodeA.apiUrl}/v1/models`, { headers: headers() });
    expect(response.status).toBe(200);
    const body = await response.json() as { object: string; data: Array<{ id: string; object: string }> };
    expect(body.object).toBe('list');
    expect(body.data.map((model) => model.id).sort()).toEqual([...modelsA, ...modelsB].sort());
    expect((await client.version()).version).toBe('0.12.6');
    const one = await fetch(`${nodeA.apiUrl}/v1/models/${onlyOnB}`, { headers: headers() });
    expect(await one.json()).toMatchObject({ id: onlyOnB, object: 'model' });
    // Model names are case-insensitive, as Ollama's are.
    const shouted = await fetch(`${nodeA.apiUrl}/v1/models/${onlyOnB.toUpperCase()}`, { headers: headers() });
    expect(await shouted.json()).toMatchObject({ id: onlyOnB, object: 'model' });
    const missing = await fetch(`${nodeA.apiUrl}/v1/models/absent:1b`, { headers: headers() });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('model_not_found');
  });

  it('chats with a model only node B has, through node A, streaming and not', async () => {
    const messages = [{ role: 'user', content: 'Where does this answer come from?' }];
    const expected = standinText(onlyOnB, renderChatPrompt(messages), responseTokens);
    const startedOnB = standinB.generationsTotal();
    const startedOnA = standinA.generationsTotal();

    const whole = await client.chat({ model: onlyOnB, messages, stream: false });
    expect(whole.message.content).toBe(expected);
    expect(whole.done).toBe(true);
    expect(whole.eval_count).toBe(responseTokens);
    // Another spelling of the name, as current Ollama accepts: the stand-in, like older
    // Ollama, knows only the listed spelling, which B's gateway uses.
    const shouted = await client.chat({ model: onlyOnB.toUpperCase(), messages, stream: false });
    expect(shouted.message.content).toBe(expected);

    const parts: string[] = [];
    let chunks = 0;
    let finalSeen = false;
    for await (const part of await client.chat({ model: onlyOnB, messages, stream: true })) {
      chunks++;
      parts.push(part.message.content);
      if (part.done) finalSeen = true;
    }
    expect(finalSeen).toBe(true);
    expect(chunks).toBe(responseTokens + 1);
    expect(parts.join('')).toBe(expected);
    expect(standinB.generationsTotal() - startedOnB).toBe(3);
    expect(standinA.generationsTotal() - startedOnA).toBe(0);

    // A model node A has itself stays on A.
    const local = await client.generate({ model: 'llama3.2:1b', prompt: 'hello', stream: false });
    expect(local.response?.length ?? 0).toBeGreaterThan(0);
    expect(standinA.generationsTotal() - startedOnA).toBe(1);
  });

  it('embeds on the node that has the embedding model', async () => {
    const before = standinB.embedRequests();
    const result = await client.embed({ model: 'all-minilm', input: ['first text', 'second text'] });
    expect(result.embeddings).toHaveLength(2);
    expect(result.embeddings[0]!.length).toBeGreaterThan(0);
    expect(standinB.embedRequests() - before).toBe(1);
    const legacy = await client.embeddings({ model: 'all-minilm', prompt: 'first text' });
    expect(legacy.embedding).toEqual(result.embeddings[0]);
    const openai = await post('/v1/embeddings', { model: 'all-minilm', input: 'one text' });
    expect(openai.status).toBe(200);
    const body = await openai.json() as { data: Array<{ embedding: number[] }> };
    expect(body.data[0]!.embedding.length).toBe(result.embeddings[0]!.length);
  });

  it('answers OpenAI chat completions, as one JSON object and as SSE ending with [DONE]', async () => {
    const messages = [{ role: 'user', content: 'OpenAI style' }];
    const expected = standinText(onlyOnB, renderChatPrompt(messages), responseTokens);
    const whole = await post('/v1/chat/completions', { model: onlyOnB, messages });
    expect(whole.status).toBe(200);
    const completion = await whole.json() as { object: string; choices: Array<{ message: { content: string }; finish_reason: string }> };
    expect(completion.object).toBe('chat.completion');
    expect(completion.choices[0]!.message.content).toBe(expected);
    expect(completion.choices[0]!.finish_reason).toBe('stop');

    const streamed = await post('/v1/chat/completions', { model: onlyOnB, messages, stream: true });
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toMatch(/text\/event-stream/);
    const events = (await streamed.text()).split('\n\n').filter((block) => block.trim() !== '');
    expect(events.every((event) => event.startsWith('data: '))).toBe(true);
    expect(events[events.length - 1]).toBe('data: [DONE]');
    const text = events.slice(0, -1).map((event) => JSON.parse(event.slice('data: '.length)) as { choices: Array<{ delta: { content?: string } }> })
      .map((chunk) => chunk.choices[0]?.delta.content ?? '').join('');
    expect(text).toBe(expected);
  });

  it('answers an unknown model as Ollama and OpenAI would, and needs a token', async () => {
    const failure = await client.chat({ model: 'no-such-model:1b', messages: [{ role: 'user', content: 'x' }] }).catch((error: unknown) => error);
    expect((failure as { status_code?: number }).status_code).toBe(404);
    expect((failure as Error).message).toBe('model "no-such-model:1b" not found, try pulling it first');

    const openai = await post('/v1/chat/completions', { model: 'no-such-model:1b', messages: [{ role: 'user', content: 'x' }] });
    expect(openai.status).toBe(404);
    const body = await openai.json() as { error: { message: string; type: string; code: string } };
    expect(body.error.message).toContain('no-such-model:1b');
    expect(typeof body.error.type).toBe('string');
    expect(body.error.code).toBe('model_not_found');

    const missingModel = await post('/api/chat', { messages: [] });
    expect(missingModel.status).toBe(400);
    expect(await missingModel.json()).toEqual({ error: 'model is required' });

    const noToken = await post('/v1/chat/completions', { model: onlyOnB, messages: [] }, { token: null });
    expect(noToken.status).toBe(401);
    expect(((await noToken.json()) as { error: { message: string } }).error.message).toMatch(/bearer token/);
    // Bodies are bounded by the HTTP body limit; the refusal is in Ollama's shape.
    const oversized = await post('/api/generate', { model: onlyOnB, prompt: 'x'.repeat(httpBodyBytesMax + 1) });
    expect(oversized.status).toBe(413);
    expect(((await oversized.json()) as { error: unknown }).error).toMatch(/byte limit/);

    const tags = await fetch(`${nodeA.apiUrl}/api/tags`);
    expect(tags.status).toBe(401);
    expect(typeof ((await tags.json()) as { error: unknown }).error).toBe('string');
  });

  it('a client abort mid-stream stops the generation on the remote stand-in', async () => {
    const controller = new AbortController();
    const response = await post('/api/generate', { model: onlyOnB, prompt: 'a very long answer please', options: { num_predict: 20_000 } }, { signal: controller.signal });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    let received = 0;
    while (received < 5) {
      const { value, done } = await reader.read();
      if (done) throw new Error('the stream ended before the abort');
      received += new TextDecoder().decode(value).split('\n').filter((line) => line.trim() !== '').length;
    }
    // While it runs, B counts the relayed generation in its gossiped load.
    await waitUntil('node B\'s heartbeat to count the gateway generation', async () => {
      const nodes = (await agentsStatus(nodeA))?.nodes ?? [];
      return (nodes.find((node) => node.id === nodeB.nodeId)?.load.running ?? 0) >= 1;
    }, 5_000, 100);
    const abortedAt = performance.now();
    controller.abort();
    const summary = await waitUntil('B\'s stand-in to log the generation aborted', () => {
      const counts = summarizeGenerations(readStandinLog(standinB.logFile!));
      return counts.aborted >= 1 && counts.running === 0 ? counts : null;
    }, 5_000, 50);
    console.log(`[measure] client abort reached node B's Ollama stand-in in ${(performance.now() - abortedAt).toFixed(0)} ms`);
    expect(summary.aborted).toBe(1);
    const aborted = standinB.generations().find((generation) => generation.outcome === 'aborted')!;
    expect(aborted.tokens).toBeLessThan(20_000);
    await waitUntil('node B\'s gossiped load to drop back to 0', async () => {
      const nodes = (await agentsStatus(nodeA))?.nodes ?? [];
      return nodes.find((node) => node.id === nodeB.nodeId)?.load.running === 0;
    }, 5_000, 100);

    // The same for an OpenAI client reading SSE.
    const openaiController = new AbortController();
    const sse = await post('/v1/chat/completions', { model: onlyOnB, stream: true, max_tokens: 20_000, messages: [{ role: 'user', content: 'long' }] }, { signal: openaiController.signal });
    expect(sse.status).toBe(200);
    const sseReader = sse.body!.getReader();
    let events = 0;
    while (events < 3) {
      const { value, done } = await sseReader.read();
      if (done) throw new Error('the SSE stream ended before the abort');
      events += (new TextDecoder().decode(value).match(/^data: /gm) ?? []).length;
    }
    openaiController.abort();
    await waitUntil('B\'s stand-in to log the OpenAI generation aborted', () => {
      const counts = summarizeGenerations(readStandinLog(standinB.logFile!));
      return counts.aborted === 2 && counts.running === 0;
    }, 5_000, 50);
  });

  it('measures what the relay adds: time to the first token and to the whole answer, direct vs via node A', async () => {
    const messages = [{ role: 'user', content: 'timing' }];
    const body = JSON.stringify({ model: onlyOnB, messages, stream: true, options: { num_predict: 8 } });
    const time = async (url: string, auth: boolean): Promise<{ firstMs: number; totalMs: number }> => {
      const started = performance.now();
      const response = await fetch(url, { method: 'POST', headers: auth ? headers() : { 'content-type': 'application/json' }, body, signal: AbortSignal.timeout(10_000) });
      const reader = response.body!.getReader();
      let firstMs = -1;
      for (;;) {
        const { done } = await reader.read();
        if (firstMs < 0) firstMs = performance.now() - started;
        if (done) break;
      }
      return { firstMs, totalMs: performance.now() - started };
    };
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const direct: Array<{ firstMs: number; totalMs: number }> = [];
    const relayed: Array<{ firstMs: number; totalMs: number }> = [];
    for (let round = 0; round < 15; round++) {
      direct.push(await time(`${standinB.url}/api/chat`, false));
      relayed.push(await time(`${nodeA.apiUrl}/api/chat`, true));
    }
    const report = (name: string, samples: typeof direct) => `${name} first ${median(samples.map((s) => s.firstMs)).toFixed(1)} ms, whole ${median(samples.map((s) => s.totalMs)).toFixed(1)} ms`;
    console.log(`[measure] 8-token streamed chat, medians of 15: ${report('direct to B\'s stand-in', direct)}; ${report('via A relayed to B', relayed)}`);
    // The relay is one libp2p hop on loopback: it must not add more than a fraction of a second.
    expect(median(relayed.map((s) => s.firstMs)) - median(direct.map((s) => s.firstMs))).toBeLessThan(250);
  });

  it('serves /metrics as Prometheus text with the hivemesh series, and the performance figures', async () => {
    const scrape = async (node: MeshDaemon): Promise<Sample[]> => {
      const response = await fetch(`${node.apiUrl}/metrics`, { headers: { authorization: `Bearer ${node.adminToken}` } });
      expect(response.status).toBe(200);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      const parsed = parsePrometheusText(await response.text());
      expect([...parsed.types.keys()].every((name) => name.startsWith('hivemesh_'))).toBe(true);
      return parsed.samples;
    };
    const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) => samples
      .filter((sample) => sample.name === name && Object.entries(labels).every(([key, text]) => sample.labels[key] === text))
      .reduce((sum, sample) => sum + sample.value, 0);
    const a = await scrape(nodeA);
    expect(value(a, 'hivemesh_gateway_requests_total', { endpoint: '/api/chat', outcome: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(value(a, 'hivemesh_gateway_requests_total', { outcome: 'not_found' })).toBeGreaterThanOrEqual(2);
    expect(value(a, 'hivemesh_gateway_requests_total', { outcome: 'aborted' })).toBeGreaterThanOrEqual(1);
    expect(value(a, 'hivemesh_gateway_request_duration_seconds_count', { endpoint: '/api/chat' })).toBeGreaterThanOrEqual(2);
    expect(value(a, 'hivemesh_gateway_relays_total', { direction: 'out', outcome: 'opened' })).toBeGreaterThanOrEqual(5);
    expect(value(a, 'hivemesh_http_requests_total', { route: '/api/chat', status: '200' })).toBeGreaterThanOrEqual(2);
    expect(value(a, 'hivemesh_http_requests_total', { route: '/api/tags', status: '401' })).toBe(1);
    expect(value(a, 'hivemesh_nodes', { state: 'alive' })).toBe(2);
    expect(value(a, 'hivemesh_raft_term')).toBeGreaterThanOrEqual(0);
    expect(a.some((sample) => sample.name === 'hivemesh_raft_commit_index')).toBe(true);
    expect(a.some((sample) => sample.name === 'hivemesh_raft_role')).toBe(true);
    expect(a.some((sample) => sample.name === 'hivemesh_tasks')).toBe(true);
    expect(value(a, 'hivemesh_heartbeat_bytes', { node: 'gw-b' })).toBeGreaterThan(100);
    expect(a.some((sample) => sample.name === 'hivemesh_event_bus_subscribers')).toBe(true);
    const b = await scrape(nodeB);
    expect(value(b, 'hivemesh_gateway_relays_total', { direction: 'in', outcome: 'opened' })).toBeGreaterThanOrEqual(5);
    expect(value(b, 'hivemesh_generation_tokens_total', { model: onlyOnB })).toBeGreaterThanOrEqual(2 * responseTokens);

    const performanceResponse = await fetch(`${nodeA.apiUrl}/api/metrics/performance`, { headers: headers() });
    expect(performanceResponse.status).toBe(200);
    const performanceBody = await performanceResponse.json() as { nodes: Array<{ name: string; tokensPerSecond: Record<string, number> }>; cluster: { nodesAlive: number; windowMs?: number } };
    expect(performanceBody.cluster.nodesAlive).toBe(2);
    expect(performanceBody.nodes.map((node) => node.name).sort()).toEqual(['gw-a', 'gw-b']);
    expect(Object.keys(performanceBody.nodes.find((node) => node.name === 'gw-b')!.tokensPerSecond)).toContain(onlyOnB);
  });

  // Last: it kills node B.
  it('a stream relayed from a node that dies mid-answer ends with an error, never as a finished answer', async () => {
    const response = await post('/api/chat', { model: onlyOnB, messages: [{ role: 'user', content: 'a long one' }], options: { num_predict: 4_000 } });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = '';
    let killed = false;
    let readFailed = false;
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch {
        readFailed = true;
        break;
      }
      if (chunk.done) break;
      text += decoder.decode(chunk.value, { stream: true });
      if (!killed && text.split('\n').length > 6) {
        killed = true;
        nodeB.kill('SIGKILL');
      }
    }
    expect(killed).toBe(true);
    const lines = text.split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as { done?: boolean; error?: string });
    expect(lines.some((line) => line.done === true)).toBe(false);
    // The client is told: an error line (as Ollama sends one), and the connection dropped.
    expect(lines.at(-1)?.error).toMatch(/cut off/);
    expect(readFailed).toBe(true);
  }, 30_000);
});
