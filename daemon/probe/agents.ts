// The agents this node offers, for the heartbeat and the executor.
//
// The rule:
// 1. When the config lists agents, those are the agents: each `{ id, model, capabilities,
//    system? }`; a capability is `{ name, proficiency }` (0..1) or a bare name, which
//    means proficiency 1. An agent is advertised only while its model is installed in the
//    local Ollama (a node cannot run an agent whose model it lacks); `agentsFor` reports
//    the others as unavailable so the daemon can say so.
// 2. Otherwise every installed model is an agent, with the model name as its id. What it
//    can do comes from Ollama's /api/show `capabilities` when Ollama says:
//    `completion` → `chat`, `embedding` → `embed`, `vision` → `vision`, `tools` → `tools`.
//    When Ollama does not say (older versions, or not asked yet), from the name:
//    - an embedding model (name like *embed*, *minilm*, bge-*, e5-*, gte-*, or family
//      bert / nomic-bert / xlm-roberta) gets `embed` only, because Ollama refuses to chat
//      or generate with it;
//    - any other model gets `chat`.
//    `embed` has proficiency 1; the others a proficiency that grows with the parameter
//    count (0.4 at 1B, 0.6 at 10B, 0.8 at 100B, clamped to 0.3..0.9; 0.5 when the size is
//    unknown), so that, all else equal, a scheduler picking by capability prefers the
//    larger model.
import type { Agent, InstalledModel } from '../../protocol/heartbeat.ts';
import { HivemeshError } from '../../protocol/errors.ts';
import { embeddingCapability } from '../../protocol/tasks.ts';
import * as limits from '../../protocol/limits.ts';
import { sameModel } from '../../scheduler/tasks/node-view.ts';

/** An agent with what the executor needs beyond the heartbeat (its system prompt). */
export interface AgentDefinition extends Agent {
  system?: string;
}

const agentIdLengthMax = 128;

function invalid(message: string): never {
  throw new HivemeshError('invalid_input', message);
}

/**
 * Validates the `agents` section of the config (already-parsed JSON) and returns the
 * definitions. Throws HivemeshError('invalid_input') naming the bad field, e.g.
 * `agents[1].capabilities[0].proficiency must be a number from 0 to 1, got 1.5`.
 */
export function parseAgentsConfig(value: unknown, where = 'agents'): AgentDefinition[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) invalid(`${where} must be a list of agents ({ id, model, capabilities, system? }), got ${typeof value}`);
  if (value.length > limits.agentsPerNodeMax) invalid(`${where} lists ${value.length} agents; at most ${limits.agentsPerNodeMax} are allowed`);
  const seen = new Set<string>();
  return value.map((entry: unknown, index) => {
    const at = `${where}[${index}]`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) invalid(`${at} must be an object { id, model, capabilities, system? }`);
    const raw = entry as Record<string, unknown>;
    for (const key of Object.keys(raw)) {
      if (!['id', 'model', 'capabilities', 'system'].includes(key)) invalid(`${at}.${key} is not a field of an agent (use id, model, capabilities, system)`);
    }
    if (typeof raw.id !== 'string' || raw.id.trim() === '' || raw.id.length > agentIdLengthMax) invalid(`${at}.id must be a non-empty string of at most ${agentIdLengthMax} characters`);
    if (seen.has(raw.id)) invalid(`${at}.id "${raw.id}" is already used by another agent`);
    seen.add(raw.id);
    if (typeof raw.model !== 'string' || raw.model.trim() === '' || raw.model.length > limits.modelNameLengthMax) {
      invalid(`${at}.model must be an Ollama model name such as "llama3.2:3b" (at most ${limits.modelNameLengthMax} characters)`);
    }
    if (!Array.isArray(raw.capabilities) || raw.capabilities.length === 0) invalid(`${at}.capabilities must be a non-empty list of names or { name, proficiency }`);
    if (raw.capabilities.length > limits.capabilitiesPerAgentMax) invalid(`${at}.capabilities has ${raw.capabilities.length} entries; at most ${limits.capabilitiesPerAgentMax} are allowed`);
    const names = new Set<string>();
    const capabilities = raw.capabilities.map((capability: unknown, capabilityIndex) => {
      const cat = `${at}.capabilities[${capabilityIndex}]`;
      let name: unknown;
      let proficiency: unknown = 1;
      if (typeof capability === 'string') name = capability;
      else if (typeof capability === 'object' && capability !== null && !Array.isArray(capability)) {
        ({ name, proficiency } = capability as { name?: unknown; proficiency?: unknown });
        if (proficiency === undefined) proficiency = 1;
      } else invalid(`${cat} must be a name or { name, proficiency }, got ${JSON.stringify(capability)}`);
      if (typeof name !== 'string' || name.trim() === '' || name.length > limits.capabilityLengthMax) {
        invalid(`${typeof capability === 'string' ? cat : `${cat}.name`} must be a non-empty string of at most ${limits.capabilityLengthMax} characters`);
      }
      if (typeof proficiency !== 'number' || !Number.isFinite(proficiency) || proficiency < 0 || proficiency > 1) {
        invalid(`${cat}.proficiency must be a number from 0 to 1, got ${JSON.stringify(proficiency)}`);
      }
      if (names.has(name)) invalid(`${cat}: capability "${name}" is listed twice`);
      names.add(name);
      return { name, proficiency };
    });
    const definition: AgentDefinition = { id: raw.id, model: raw.model, capabilities };
    if (raw.system !== undefined) {
      if (typeof raw.system !== 'string' || raw.system.length > limits.systemPromptLengthMax) invalid(`${at}.system must be a string of at most ${limits.systemPromptLengthMax} characters`);
      definition.system = raw.system;
    }
    return definition;
  });
}

const embeddingNamePattern = /embed|minilm|(^|[/:-])bge[-:]|(^|[/:-])e5[-:]|(^|[/:-])gte[-:]/i;
const embeddingFamilies = new Set(['bert', 'nomic-bert', 'xlm-roberta', 'jina-bert-v2']);

export function isEmbeddingModel(model: Pick<InstalledModel, 'name' | 'family'>): boolean {
  return embeddingNamePattern.test(model.name) || (model.family !== undefined && embeddingFamilies.has(model.family.toLowerCase()));
}

/** Parameter count in billions from Ollama's parameter_size ("7.6B", "137M"), or null. */
export function parameterBillions(parameterSize: string | undefined): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMBT])\s*$/i.exec(parameterSize ?? '');
  if (match === null) return null;
  const scale: Record<string, number> = { K: 1e-6, M: 1e-3, B: 1, T: 1e3 };
  return Number(match[1]) * (scale[(match[2] ?? 'B').toUpperCase()] ?? 1);
}

export function chatProficiency(parameterSize: string | undefined): number {
  const billions = parameterBillions(parameterSize);
  if (billions === null || billions <= 0) return 0.5;
  const proficiency = 0.4 + 0.2 * Math.log10(billions);
  return Math.round(Math.min(0.9, Math.max(0.3, proficiency)) * 100) / 100;
}

/** Ollama's capability names and the agent capabilities they give. */
const capabilityFromOllama: Record<string, string> = { completion: 'chat', embedding: embeddingCapability, vision: 'vision', tools: 'tools' };

/** What Ollama says a model can do, or null when unknown. */
export type ModelCapabilitiesLookup = (modelName: string) => readonly string[] | null;

export function agentsFromModels(installed: readonly InstalledModel[], ollamaCapabilities: ModelCapabilitiesLookup = () => null): AgentDefinition[] {
  return installed.slice(0, limits.agentsPerNodeMax).map((model) => {
    const reported = ollamaCapabilities(model.name);
    const names = reported !== null && reported.length > 0
      ? [...new Set(reported.map((name) => capabilityFromOllama[name]).filter((name): name is string => name !== undefined))]
      : [isEmbeddingModel(model) ? embeddingCapability : 'chat'];
    // A model whose reported capabilities hivemesh has no name for falls back to the name rule.
    if (names.length === 0) names.push(isEmbeddingModel(model) ? embeddingCapability : 'chat');
    return {
      id: model.name.slice(0, agentIdLengthMax),
      model: model.name,
      capabilities: names.map((name) => ({ name, proficiency: name === embeddingCapability ? 1 : chatProficiency(model.parameterSize) })),
    };
  });
}

export interface AgentsResolution {
  /** The agents to advertise and run. */
  agents: AgentDefinition[];
  /** Configured agents left out because their model is not installed. */
  unavailable: Array<{ id: string; model: string }>;
}

/** Applies the rule above to the configured agents and the models Ollama reports. */
export function agentsFor(configured: readonly AgentDefinition[], installed: readonly InstalledModel[], ollamaCapabilities?: ModelCapabilitiesLookup): AgentsResolution {
  if (configured.length === 0) return { agents: agentsFromModels(installed, ollamaCapabilities), unavailable: [] };
  const agents: AgentDefinition[] = [];
  const unavailable: Array<{ id: string; model: string }> = [];
  for (const agent of configured) {
    if (installed.some((model) => sameModel(model.name, agent.model))) agents.push(agent);
    else unavailable.push({ id: agent.id, model: agent.model });
  }
  return { agents, unavailable };
}

/** The heartbeat's view of an agent (no system prompt: it can be long and is local business). */
export function heartbeatAgent(agent: AgentDefinition): Agent {
  return { id: agent.id, model: agent.model, capabilities: agent.capabilities.map((capability) => ({ ...capability })) };
}
