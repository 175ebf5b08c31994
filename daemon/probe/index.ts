// The health probe: hardware, the local Ollama and the agents, composed into the synchronous
// snapshot each heartbeat carries. Readings happen in the background; `snapshot()` never
// waits. Usage:
//   const probe = new HealthProbe({ ollamaUrl, agents: config.agents });
//   await probe.start();            // first readings, bounded by the probes' timeouts
//   heartbeat.hardware = probe.snapshot().hardware; ...
//   probe.recordGeneration(model, evalCount, evalDurationNs);   // after each generation
//   await probe.stop();
import type { Agent, Hardware, OllamaState } from '../../protocol/heartbeat.ts';
import { logger } from '../log.ts';
import { HardwareProbe, type HardwareProbeOptions } from './hardware.ts';
import { OllamaProbe, type OllamaProbeOptions } from './ollama.ts';
import { agentsFor, heartbeatAgent, parseAgentsConfig, type AgentDefinition } from './agents.ts';
import { installedNameOf } from '../../scheduler/tasks/node-view.ts';

export { HardwareProbe, gpusFromControllers, type HardwareSource, type HardwareProbeOptions } from './hardware.ts';
export { OllamaProbe, backoffDelayMs, describeOllamaFailure, type OllamaProbeOptions, type OllamaProbeStatus } from './ollama.ts';
export { agentsFor, agentsFromModels, isEmbeddingModel, parseAgentsConfig, chatProficiency, type AgentDefinition } from './agents.ts';

const log = logger('probe');

export interface HealthProbeOptions {
  ollamaUrl: string;
  /** The config's `agents` section (validated here); empty or absent: one agent per installed model. */
  agents?: unknown;
  hardware?: HardwareProbeOptions;
  ollama?: Omit<OllamaProbeOptions, 'url'>;
}

export interface HealthSnapshot {
  hardware: Hardware;
  ollama: OllamaState;
  agents: Agent[];
}

export class HealthProbe {
  readonly hardware: HardwareProbe;
  readonly ollama: OllamaProbe;
  private readonly configuredAgents: AgentDefinition[];
  private agentsCache: { installed: OllamaState['installed']; definitions: AgentDefinition[]; heartbeat: Agent[] } | null = null;
  private reportedUnavailable = '';

  /** Throws HivemeshError('invalid_input') naming the field when the agents config is wrong. */
  constructor(options: HealthProbeOptions) {
    this.configuredAgents = parseAgentsConfig(options.agents);
    this.hardware = new HardwareProbe(options.hardware);
    this.ollama = new OllamaProbe({ ...options.ollama, url: options.ollamaUrl });
  }

  /** Takes the first readings of hardware and Ollama together, then keeps them fresh. Never throws. */
  async start(): Promise<void> {
    await Promise.all([this.hardware.start(), this.ollama.start()]);
  }

  async stop(): Promise<void> {
    this.hardware.stop();
    this.ollama.stop();
  }

  snapshot(): HealthSnapshot {
    const ollama = this.ollama.current();
    return { hardware: this.hardware.current(), ollama, agents: this.resolveAgents(ollama).heartbeat };
  }

  /** The agents with their system prompts, for the executor. */
  agentDefinitions(): AgentDefinition[] {
    return this.resolveAgents(this.ollama.current()).definitions;
  }

  /** The name this node's Ollama lists for `model` (Ollama's names are case-insensitive), or `model` when none matches. */
  installedName(model: string): string {
    return installedNameOf(this.ollama.current().installed, model);
  }

  recordGeneration(model: string, tokens: number, evalDurationNs: number, options: { provisional?: boolean } = {}): void {
    this.ollama.recordGeneration(model, tokens, evalDurationNs, options);
  }

  /** Polls Ollama now (after a load, so the heartbeat shows the model in VRAM without waiting for the next poll). */
  refreshOllama(): void {
    void this.ollama.refresh();
  }

  /** A cold load Ollama reported for a generation (its load_duration, ms). */
  recordLoad(model: string, loadMs: number): void {
    this.ollama.recordLoad(model, loadMs);
  }

  // The installed list is a new array after each poll, so the identity check recomputes
  // agents only when Ollama was polled, not on every heartbeat.
  private resolveAgents(ollama: OllamaState): { definitions: AgentDefinition[]; heartbeat: Agent[] } {
    if (this.agentsCache?.installed === ollama.installed) return this.agentsCache;
    const { agents, unavailable } = agentsFor(this.configuredAgents, ollama.installed, (name) => this.ollama.modelCapabilities(name));
    const unavailableText = unavailable.map((agent) => `${agent.id} (${agent.model})`).join(', ');
    if (ollama.reachable && unavailableText !== this.reportedUnavailable && unavailableText !== '') {
      log.warn(`agents not offered because their model is not installed in Ollama at ${ollama.url}: ${unavailableText}; install with \`ollama pull MODEL\``);
    }
    this.reportedUnavailable = unavailableText;
    this.agentsCache = { installed: ollama.installed, definitions: agents, heartbeat: agents.map(heartbeatAgent) };
    return this.agentsCache;
  }
}
