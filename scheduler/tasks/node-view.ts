// What the scheduler knows about a node: the part of its latest heartbeat that placement
// needs, plus whether the failure detector holds it alive. Pure data, built by the daemon
// from gossip (nodeViewFromHeartbeat) or by tests and the simulator directly.
import type { NodeStatus } from '../../protocol/api.ts';
import type { Heartbeat } from '../../protocol/heartbeat.ts';

export interface AgentView {
  id: string;
  model: string;
  capabilities: readonly { name: string; proficiency: number }[];
}

export interface NodeView {
  id: string;
  /** The node's name, for people (reasons a task waits); optional. */
  name?: string;
  /** False once the failure detector calls it suspect or dead: nothing new goes there. */
  alive: boolean;
  modelsInstalled: readonly string[];
  /** In VRAM now: no load time. */
  modelsLoaded: readonly string[];
  /** Measured generation speed per model; missing models fall back to a default. */
  tokensPerSecond: Readonly<Record<string, number>>;
  /** Size on disk per installed model (keyed by modelKey), for the load-time estimate; optional. */
  modelSizeBytes?: Readonly<Record<string, number>>;
  /** The node's measured load speed (bytes of model per second); absent until it saw a cold load. */
  loadBytesPerSecond?: number;
  /**
   * Generations running now (tasks and gateway requests), as the node reports. Placement
   * counts the part beyond the tasks the log has running there as other work.
   */
  running: number;
  concurrencyLimit: number;
  /**
   * When every slot is taken: about how long until the first one frees, from the attempts
   * the log has on the node (the leader fills it in per round); absent, the estimate
   * assumes a slot frees after a share of the new task's own run time.
   */
  slotFreeInMs?: number;
  agents: readonly AgentView[];
}

/**
 * A node as texts for people name it: `name (id)`, or the id alone when the name is unknown
 * or is the id. The CLI turns this shape back into the name alone (daemon/cli/format.ts).
 */
export function nodeLabel(node: { id: string; name?: string | undefined }): string {
  return node.name === undefined || node.name === node.id ? node.id : `${node.name} (${node.id})`;
}

/**
 * Ollama's full name of a model: a name without a tag means `:latest` (a registry's port, as
 * in `host:5000/model`, is no tag). The spelling is kept: this is the name to show.
 */
export function normalizeModelName(name: string): string {
  return name.slice(name.lastIndexOf('/') + 1).includes(':') ? name : `${name}:latest`;
}

/**
 * The key under which Ollama finds a model: the full name, in any case (Ollama resolves
 * `Llama3.2:1B` to an installed `llama3.2:1b`). For comparing and indexing, not for showing.
 */
export function modelKey(name: string): string {
  return normalizeModelName(name).toLowerCase();
}

/** `llama3`, `llama3:latest` and `Llama3:Latest` are one model to Ollama. */
export function sameModel(a: string, b: string): boolean {
  return modelKey(a) === modelKey(b);
}

/** The installed name `model` means here (the spelling Ollama lists), or `model` itself when none matches. */
export function installedNameOf(installed: ReadonlyArray<string | { name: string }>, model: string): string {
  for (const entry of installed) {
    const name = typeof entry === 'string' ? entry : entry.name;
    if (sameModel(name, model)) return name;
  }
  return model;
}

/**
 * What a task asks for that no live node offers (its model, or its capability), or null
 * when some live node can run it: the CLI warns at submit, MCP's run_prompt refuses.
 */
export function missingOnLiveNodes(nodes: readonly NodeStatus[], want: { model?: string | undefined; capability?: string | undefined }): 'model' | 'capability' | null {
  const alive = nodes.filter((node) => node.state === 'alive');
  const { model, capability } = want;
  if (model !== undefined) return alive.some((node) => node.models.installed.some((installed) => sameModel(installed.name, model))) ? null : 'model';
  if (capability !== undefined) return alive.some((node) => node.capabilities.includes(capability)) ? null : 'capability';
  return null;
}

export function hasModel(models: readonly string[], model: string): boolean {
  return models.some((candidate) => sameModel(candidate, model));
}

/** The measured tokens/s for a model under either spelling of its name. */
export function measuredTokensPerSecond(node: NodeView, model: string): number | undefined {
  for (const [name, speed] of Object.entries(node.tokensPerSecond)) {
    if (sameModel(name, model) && Number.isFinite(speed) && speed > 0) return speed;
  }
  return undefined;
}

function sizeOf(node: NodeView, model: string): number | undefined {
  const size = node.modelSizeBytes?.[modelKey(model)];
  return size !== undefined && Number.isFinite(size) && size > 0 ? size : undefined;
}

/**
 * The generation speed to expect of `model` on `node`: the measured one; else, from the
 * speeds measured for the node's other models, scaled by model size (generation reads the
 * whole model once per token, so its speed goes about as the inverse of the size; a node
 * twice as fast on one model is about twice as fast on another); else undefined. Without
 * this, every node looks equally fast for a model until it has run it once, and the first
 * tasks of each model are placed blind.
 */
export function expectedTokensPerSecond(node: NodeView, model: string): number | undefined {
  const measured = measuredTokensPerSecond(node, model);
  if (measured !== undefined) return measured;
  const size = sizeOf(node, model);
  const guesses: number[] = [];
  for (const [name, speed] of Object.entries(node.tokensPerSecond)) {
    if (!Number.isFinite(speed) || speed <= 0) continue;
    const otherSize = sizeOf(node, name);
    const ratio = size === undefined || otherSize === undefined ? 1 : Math.min(10, Math.max(0.1, otherSize / size));
    guesses.push(speed * ratio);
  }
  if (guesses.length === 0) return undefined;
  guesses.sort((a, b) => a - b);
  return guesses[Math.floor(guesses.length / 2)];
}

export function nodeViewFromHeartbeat(heartbeat: Heartbeat, alive: boolean): NodeView {
  const modelSizeBytes: Record<string, number> = {};
  for (const model of heartbeat.ollama.installed) modelSizeBytes[modelKey(model.name)] = model.sizeBytes;
  return {
    id: heartbeat.nodeId,
    name: heartbeat.name,
    // A node on its way out, or whose Ollama is unreachable, takes no new work.
    alive: alive && !heartbeat.leaving && heartbeat.ollama.reachable,
    modelsInstalled: heartbeat.ollama.installed.map((model) => model.name),
    modelsLoaded: heartbeat.ollama.loaded.map((model) => model.name),
    tokensPerSecond: { ...heartbeat.ollama.tokensPerSecond },
    modelSizeBytes,
    ...(heartbeat.ollama.loadBytesPerSecond === undefined ? {} : { loadBytesPerSecond: heartbeat.ollama.loadBytesPerSecond }),
    running: heartbeat.load.running,
    concurrencyLimit: heartbeat.load.concurrencyLimit,
    agents: heartbeat.agents.map((agent) => ({ id: agent.id, model: agent.model, capabilities: agent.capabilities })),
  };
}
