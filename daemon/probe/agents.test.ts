// The agents rule: configured agents validated with errors that name the field, offered
// only while their model is installed; otherwise one agent per installed model.
import { describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { Agent, type InstalledModel } from '../../protocol/heartbeat.ts';
import { HivemeshError } from '../../protocol/errors.ts';
import * as limits from '../../protocol/limits.ts';
import { agentsFor, agentsFromModels, chatProficiency, heartbeatAgent, isEmbeddingModel, parseAgentsConfig } from './agents.ts';

function errorOf(value: unknown): HivemeshError {
  try {
    parseAgentsConfig(value);
  } catch (error) {
    if (error instanceof HivemeshError) return error;
    throw error;
  }
  throw new Error('expected the agents config to be refused');
}

const installed: InstalledModel[] = [
  { name: 'llama3.2:1b', sizeBytes: 1.3e9, family: 'llama', parameterSize: '1.2B' },
  { name: 'qwen2.5:72b', sizeBytes: 47e9, family: 'qwen2', parameterSize: '72.7B' },
  { name: 'nomic-embed-text:latest', sizeBytes: 274e6, family: 'nomic-bert', parameterSize: '137M' },
  { name: 'mystery:latest', sizeBytes: 1e9 },
];

describe('agents', () => {
  it('parses configured agents; a bare capability name means proficiency 1', () => {
    expect(parseAgentsConfig([
      { id: 'coder', model: 'qwen2.5:72b', capabilities: ['code', { name: 'review', proficiency: 0.7 }], system: 'You write TypeScript.' },
      { id: 'helper', model: 'llama3.2', capabilities: [{ name: 'chat' }] },
    ])).toEqual([
      { id: 'coder', model: 'qwen2.5:72b', capabilities: [{ name: 'code', proficiency: 1 }, { name: 'review', proficiency: 0.7 }], system: 'You write TypeScript.' },
      { id: 'helper', model: 'llama3.2', capabilities: [{ name: 'chat', proficiency: 1 }] },
    ]);
    expect(parseAgentsConfig(undefined)).toEqual([]);
    expect(parseAgentsConfig([])).toEqual([]);
  });

  it('refuses a bad agents config with a message naming the field', () => {
    const good = { id: 'a', model: 'llama3.2:1b', capabilities: ['chat'] };
    const cases: Array<[unknown, string]> = [
      [{ id: 'a' }, 'agents must be a list of agents'],
      [[null], 'agents[0] must be an object'],
      [[{ ...good, id: '' }], 'agents[0].id must be a non-empty string'],
      [[good, good], 'agents[1].id "a" is already used by another agent'],
      [[{ ...good, model: 7 }], 'agents[0].model must be an Ollama model name'],
      [[{ ...good, capabilities: [] }], 'agents[0].capabilities must be a non-empty list'],
      [[{ ...good, capabilities: ['chat', { name: 'code', proficiency: 1.5 }] }], 'agents[0].capabilities[1].proficiency must be a number from 0 to 1, got 1.5'],
      [[{ ...good, capabilities: [{ proficiency: 0.5 }] }], 'agents[0].capabilities[0].name must be a non-empty string'],
      [[{ ...good, capabilities: [42] }], 'agents[0].capabilities[0] must be a name or { name, proficiency }, got 42'],
      [[{ ...good, capabilities: ['chat', 'chat'] }], 'agents[0].capabilities[1]: capability "chat" is listed twice'],
      [[{ ...good, capabilities: ['x'.repeat(limits.capabilityLengthMax + 1)] }], 'agents[0].capabilities[0] must be a non-empty string'],
      [[{ ...good, system: 3 }], 'agents[0].system must be a string'],
      [[{ ...good, prompt: 'hi' }], 'agents[0].prompt is not a field of an agent'],
      [Array.from({ length: limits.agentsPerNodeMax + 1 }, (_, index) => ({ ...good, id: `a${index}` })), `at most ${limits.agentsPerNodeMax} are allowed`],
    ];
    for (const [value, message] of cases) {
      const error = errorOf(value);
      expect(error.code).toBe('invalid_input');
      expect(error.message).toContain(message);
    }
  });

  it('derives one agent per installed model when none are configured', () => {
    const agents = agentsFromModels(installed);
    expect(agents).toEqual([
      { id: 'llama3.2:1b', model: 'llama3.2:1b', capabilities: [{ name: 'chat', proficiency: 0.42 }] },
      { id: 'qwen2.5:72b', model: 'qwen2.5:72b', capabilities: [{ name: 'chat', proficiency: 0.77 }] },
      { id: 'nomic-embed-text:latest', model: 'nomic-embed-text:latest', capabilities: [{ name: 'embed', proficiency: 1 }] },
      { id: 'mystery:latest', model: 'mystery:latest', capabilities: [{ name: 'chat', proficiency: 0.5 }] },
    ]);
    for (const agent of agents) expect(Value.Check(Agent, heartbeatAgent(agent))).toBe(true);
    expect(agentsFor([], installed).agents).toEqual(agents);
  });

  it('recognises embedding models by name or family', () => {
    expect(isEmbeddingModel({ name: 'all-minilm:latest' })).toBe(true);
    expect(isEmbeddingModel({ name: 'mxbai-embed-large:latest' })).toBe(true);
    expect(isEmbeddingModel({ name: 'bge-m3:latest' })).toBe(true);
    expect(isEmbeddingModel({ name: 'custom:latest', family: 'bert' })).toBe(true);
    expect(isEmbeddingModel({ name: 'llama3.2:1b', family: 'llama' })).toBe(false);
    expect(isEmbeddingModel({ name: 'gemma3:4b', family: 'gemma3' })).toBe(false);
    expect([undefined, '1B', '10B', '100B', '500M', '1.5T'].map((size) => chatProficiency(size))).toEqual([0.5, 0.4, 0.6, 0.8, 0.34, 0.9]);
  });

  it('offers configured agents only while their model is installed (name and name:latest are one)', () => {
    const configured = parseAgentsConfig([
      { id: 'small', model: 'llama3.2:1b', capabilities: ['chat'] },
      { id: 'embedder', model: 'nomic-embed-text', capabilities: ['embed'] },
      { id: 'absent', model: 'mistral:7b', capabilities: ['chat'], system: 'x' },
    ]);
    const resolution = agentsFor(configured, installed);
    expect(resolution.agents.map((agent) => agent.id)).toEqual(['small', 'embedder']);
    expect(resolution.unavailable).toEqual([{ id: 'absent', model: 'mistral:7b' }]);
    // Nothing installed (or Ollama unreachable): no configured agent can run.
    expect(agentsFor(configured, []).agents).toEqual([]);
    expect(heartbeatAgent({ ...configured[2]!, system: 'secret' })).not.toHaveProperty('system');
  });

  it('takes capabilities from Ollama when it reports them, else from the name', () => {
    const reported: Record<string, string[]> = {
      'llama3.2:1b': ['completion', 'tools'],
      'qwen2.5:72b': ['completion', 'vision', 'tools', 'thinking'],
      'nomic-embed-text:latest': ['embedding'],
      'mystery:latest': ['insert'],
    };
    const agents = agentsFromModels(installed, (name) => reported[name] ?? null);
    expect(agents.map((agent) => agent.capabilities)).toEqual([
      [{ name: 'chat', proficiency: 0.42 }, { name: 'tools', proficiency: 0.42 }],
      [{ name: 'chat', proficiency: 0.77 }, { name: 'vision', proficiency: 0.77 }, { name: 'tools', proficiency: 0.77 }],
      [{ name: 'embed', proficiency: 1 }],
      [{ name: 'chat', proficiency: 0.5 }],
    ]);
    expect(agentsFor([], installed, () => null).agents).toEqual(agentsFromModels(installed));
  });
});
