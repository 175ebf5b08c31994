// Keeping a heartbeat within heartbeatBytesMax. A node with a couple of hundred models
// (about 290 bytes each: the installed entry, its agent, its speed) would build a
// heartbeat over the bound, which the codec refuses to encode: no heartbeat at all, and
// its peers would call it dead. Instead the heartbeat carries the models that matter most
// and leaves out the rest, which are then not scheduled on that node (the caller warns).
import type { Agent, Heartbeat } from '../../protocol/heartbeat.ts';
import * as limits from '../../protocol/limits.ts';
import { normalizeModelName as normalize } from '../../scheduler/tasks/node-view.ts';

type Body = Pick<Heartbeat, 'ollama' | 'agents'>;

/** Room kept for the envelope fields (ids, sequence, times) added after the body. */
const envelopeBytes = 1_024;

export interface FitResult<T extends Body> {
  body: T;
  /** Installed models left out; 0 when everything fit. */
  omittedModels: number;
}

function size(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value));
}

/**
 * `body` as is when it fits in `bytesMax`; else with as many installed models as fit,
 * in this order: loaded in VRAM, then with a measured speed, then used by an agent that
 * is not simply "one per model", then the rest in Ollama's order. Agents, loaded models
 * and speeds of models left out go with them; the agents list also keeps to its own bound.
 */
export function fitHeartbeatBody<T extends Body>(body: T, bytesMax: number = limits.heartbeatBytesMax): FitResult<T> {
  const agents = body.agents.slice(0, limits.agentsPerNodeMax);
  const capped = agents.length === body.agents.length ? body : { ...body, agents };
  const budget = bytesMax - envelopeBytes;
  if (size(capped) <= budget) return { body: capped, omittedModels: 0 };

  const { installed } = body.ollama;
  const loaded = new Set(body.ollama.loaded.map((model) => normalize(model.name)));
  const measured = new Set(Object.keys(body.ollama.tokensPerSecond).map(normalize));
  const configured = new Set(agents.filter((agent) => normalize(agent.id) !== normalize(agent.model)).map((agent) => normalize(agent.model)));
  const rank = (name: string) => (loaded.has(name) ? 0 : measured.has(name) ? 1 : configured.has(name) ? 2 : 3);
  const ordered = installed
    .map((model, position) => ({ model, position, rank: rank(normalize(model.name)) }))
    .sort((a, b) => a.rank - b.rank || a.position - b.position);

  const keeping = (count: number): T => {
    const kept = new Set(ordered.slice(0, count).map((entry) => normalize(entry.model.name)));
    const keep = (name: string) => kept.has(normalize(name));
    return {
      ...body,
      ollama: {
        ...body.ollama,
        installed: installed.filter((model) => keep(model.name)),
        loaded: body.ollama.loaded.filter((model) => keep(model.name)),
        tokensPerSecond: Object.fromEntries(Object.entries(body.ollama.tokensPerSecond).filter(([name]) => keep(name))),
      },
      agents: agents.filter((agent: Agent) => keep(agent.model)),
    };
  };
  // The largest count that fits: size grows with the count.
  let low = 0;
  let high = ordered.length;
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (size(keeping(middle)) <= budget) low = middle;
    else high = middle - 1;
  }
  return { body: keeping(low), omittedModels: ordered.length - low };
}
