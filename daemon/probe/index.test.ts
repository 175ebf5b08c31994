// The composed health probe: a snapshot that fits the heartbeat, agents that follow the
// installed models, bad agent config refused at construction, and nothing left running
// after stop().
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { Ollama } from 'ollama';
import { Agent, Hardware, OllamaState } from '../../protocol/heartbeat.ts';
import { HivemeshError } from '../../protocol/errors.ts';
import { startStandin, type Standin } from '../../tests/ollama-standin/server.ts';
import { HealthProbe } from './index.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function standin(models: string[]): Promise<Standin> {
  const server = await startStandin({ models, tokensPerSecond: 1000, coldLoadMs: 10 });
  cleanups.push(() => server.close());
  return server;
}

describe('HealthProbe', () => {
  it('gives a heartbeat-valid snapshot whose agents follow the installed models', async () => {
    const server = await standin(['llama3.2:1b', 'all-minilm']);
    const probe = new HealthProbe({ ollamaUrl: server.url, hardware: { refreshIntervalMs: 60_000 }, ollama: { intervalMs: 60_000 } });
    cleanups.push(() => probe.stop());
    await probe.start();
    const snapshot = probe.snapshot();
    expect(Value.Check(Hardware, snapshot.hardware)).toBe(true);
    expect(Value.Check(OllamaState, snapshot.ollama)).toBe(true);
    for (const agent of snapshot.agents) expect(Value.Check(Agent, agent)).toBe(true);
    expect(snapshot.ollama.reachable).toBe(true);
    expect(snapshot.agents).toEqual([
      { id: 'llama3.2:1b', model: 'llama3.2:1b', capabilities: [{ name: 'chat', proficiency: 0.4 }] },
      { id: 'all-minilm:latest', model: 'all-minilm:latest', capabilities: [{ name: 'embed', proficiency: 1 }] },
    ]);
    // Snapshots between polls are the same objects: nothing is recomputed per heartbeat.
    expect(probe.snapshot().agents).toBe(snapshot.agents);

    server.setModels([{ name: 'qwen2.5:7b', capabilities: ['completion', 'tools'] }]);
    await probe.ollama.refresh();
    expect(probe.snapshot().agents).toEqual([{ id: 'qwen2.5:7b', model: 'qwen2.5:7b', capabilities: [{ name: 'chat', proficiency: 0.57 }, { name: 'tools', proficiency: 0.57 }] }]);

    server.setTokensPerSecond(100);
    const result = await new Ollama({ host: server.url }).generate({ model: 'qwen2.5:7b', prompt: 'hi', options: { num_predict: 20 } });
    probe.recordGeneration('qwen2.5:7b', result.eval_count, result.eval_duration);
    const measured = probe.snapshot().ollama.tokensPerSecond['qwen2.5:7b'] ?? 0;
    // The model was not loaded before: recording the generation polls Ollama at once.
    await vi.waitFor(() => expect(probe.snapshot().ollama.loaded.map((model) => model.name)).toEqual(['qwen2.5:7b']), { timeout: 2000 });
    // The stand-in streams at 100 tokens/s (a loaded machine can make it a little slower).
    expect(measured).toBeGreaterThan(50);
    expect(measured).toBeLessThan(150);
  });

  it('offers configured agents with their system prompts while their model is installed', async () => {
    const server = await standin(['llama3.2:1b']);
    const probe = new HealthProbe({
      ollamaUrl: server.url,
      agents: [
        { id: 'writer', model: 'llama3.2:1b', capabilities: [{ name: 'write', proficiency: 0.8 }], system: 'You write release notes.' },
        { id: 'coder', model: 'qwen2.5-coder:7b', capabilities: ['code'] },
      ],
      hardware: { refreshIntervalMs: 60_000 },
      ollama: { intervalMs: 60_000 },
    });
    cleanups.push(() => probe.stop());
    await probe.start();
    expect(probe.snapshot().agents).toEqual([{ id: 'writer', model: 'llama3.2:1b', capabilities: [{ name: 'write', proficiency: 0.8 }] }]);
    expect(probe.agentDefinitions()[0]?.system).toBe('You write release notes.');
    await new Ollama({ host: server.url }).pull({ model: 'qwen2.5-coder:7b' });
    await probe.ollama.refresh();
    expect(probe.snapshot().agents.map((agent) => agent.id)).toEqual(['writer', 'coder']);
  });

  it('refuses a bad agents config at construction, naming the field', () => {
    expect(() => new HealthProbe({ ollamaUrl: 'http://127.0.0.1:9', agents: [{ id: 'x', model: 'm', capabilities: [{ name: 'chat', proficiency: 2 }] }] }))
      .toThrow(new HivemeshError('invalid_input', 'agents[0].capabilities[0].proficiency must be a number from 0 to 1, got 2'));
  });

  it('starts with Ollama down without throwing, and polls no more after stop()', async () => {
    const probe = new HealthProbe({ ollamaUrl: 'http://127.0.0.1:9', hardware: { refreshIntervalMs: 20 }, ollama: { intervalMs: 20, backoffInitialMs: 20, backoffMaxMs: 20 } });
    await probe.start();
    expect(probe.snapshot().ollama).toMatchObject({ reachable: false, installed: [] });
    expect(probe.snapshot().ollama.error).toContain('http://127.0.0.1:9');
    expect(probe.snapshot().agents).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await probe.stop();
    // A poll under way when stop() ran ends at once (its requests are aborted).
    await new Promise((resolve) => setTimeout(resolve, 30));
    const polledAt = probe.ollama.status().lastPollAt;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(probe.ollama.status().lastPollAt).toBe(polledAt);
  });
});
