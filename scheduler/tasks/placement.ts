// The leader's placement: which node runs which ready task. Late binding: a task is only
// handed to a node with a free slot (never more in flight than its concurrency limit),
// so work waits in the replicated queue, where priorities and aging still apply, rather
// than in a node's private backlog. Each task goes to the eligible node with the lowest
// estimated completion time (its bid, or our own estimate when the bid is missing),
// divided by the agent's proficiency for capability tasks; ties go to the smaller node id.
import * as limits from '../../protocol/limits.ts';
import type { Task } from '../../protocol/tasks.ts';
import type { ReplicatedState, TaskRecord } from '../state/state.ts';
import type { CommandOf } from '../state/commands.ts';
import { expectedTokensPerSecond, hasModel, nodeLabel, modelKey, sameModel, type NodeView } from './node-view.ts';
import { pendingDependencies, readyTasks } from './ready.ts';

/**
 * Heuristics of the estimate where nothing is measured. Generation dominates; the numbers
 * are deliberately middle-of-the-road for a 7-8B model on a consumer GPU.
 */
/**
 * A busy node must promise to finish a task this many times sooner than the best free node
 * before the task waits for it: estimates are rough, and an idle slot now is certain.
 */
export const busyPreferenceMargin = 1.5;

export const estimateDefaults = {
  /** Generation speed of a model on a node that has measured none of its models. */
  tokensPerSecond: 20,
  /** Prompt evaluation runs this many times faster than generation. */
  promptSpeedup: 10,
  /** Characters per token, to turn a prompt length into tokens. */
  charactersPerToken: 4,
  /** Output tokens expected when options.num_predict does not say. */
  outputTokens: 256,
  /** Loading a model of unknown size into VRAM. */
  modelLoadMs: 10_000,
  /** Loading a model of known size: fixed part plus size / disk-to-VRAM speed. */
  modelLoadBaseMs: 1_000,
  modelLoadBytesPerSecond: 1_000_000_000,
  /**
   * Each generation already running on the node slows a new one by this fraction (Ollama
   * shares the GPU between parallel requests), which spreads work over idle nodes.
   */
  contentionPerRunning: 0.5,
};

/** A node's way to run a task: the model it would use, and the agent for capability tasks. */
export interface Candidate {
  node: NodeView;
  model: string;
  agentId: string | null;
  /** 1 for plain model tasks; the agent's proficiency (0..1] for capability tasks. */
  proficiency: number;
}

/** A node's own estimate, gathered by the leader in a bid round. */
export interface Bid {
  taskId: string;
  node: string;
  estimateMs: number;
}

export interface Assignment {
  taskId: string;
  node: string;
  /** The attempt number to commit: the task's attempt + 1 (the fencing token with the term). */
  attempt: number;
  model: string;
  agentId: string | null;
  estimateMs: number;
}

export interface Waiting {
  taskId: string;
  reason: string;
}

/** A model the leader asks a node to load into VRAM ahead of the tasks that will want it there. */
export interface Preload {
  node: string;
  model: string;
  /** The estimated load time. */
  loadMs: number;
}

export interface PlanResult {
  assignments: Assignment[];
  /** Ready tasks left queued, with the reason, for the Task view's waitingFor. */
  waiting: Waiting[];
  /** Loads to ask for (only with PlanOptions.loading); each is also recorded there. */
  preloads: Preload[];
}

/** The key of a node's model in PlanOptions.loading and loadRegret. */
export function nodeModelKey(node: string, model: string): string {
  return `${node}\u0000${modelKey(model)}`;
}

export interface PlanOptions {
  agingStepMs?: number;
  /**
   * Ski rental of model loads, kept by the caller across rounds (the leader, per term):
   * per node and model, the time the tasks placed elsewhere would have saved had the model
   * been in VRAM there. Placement is per task, and for one task a warm slower node usually
   * beats loading the model on a faster one, so without it a fast node would never load a
   * model a slow node already holds, however many of its tasks come. Once the regret
   * reaches the load's cost, the next task goes to that node cold and pays the load once
   * (the online rule that never costs more than twice the best choice made in hindsight).
   */
  loadRegret?: Map<string, number>;
  /**
   * Model loads under way, asked for or begun by a task sent to a node where its model was
   * cold, by nodeModelKey: when each should be done (the clock of nowMs). Kept by the caller across rounds, which drops an entry once
   * the node shows the model in VRAM or the load is long overdue. Given, the ski rental
   * buys by preloading: when a node's regret covers a load, the model is loaded there
   * without a task (PlanResult.preloads, added here) and the task goes to the best node as
   * it is, so no task waits for a load that was bought for the tasks after it. A node's
   * estimate for a model it is loading counts only the rest of the load.
   */
  loading?: Map<string, number>;
  /** At most this many assignments per round; defaults to limits.assignmentsPerPlanMax. */
  assignmentsMax?: number;
  /** Nodes that keep failing generations (NodeHealth): used only when no other node can run a task. */
  avoidNodes?: ReadonlySet<string>;
  /**
   * Once every alive node's slots are taken, stop weighing the remaining tasks: none of them
   * can be assigned this round, and only their waiting reasons would come of it (listed as
   * fullWaitingReason). The leader sets it: with thousands queued, weighing every task on
   * every node held its event loop 100-200 ms per round on the loaded test machine, round
   * after round. Off by default, so the reasons stay complete for callers that show them.
   */
  stopWhenFull?: boolean;
}

/** The reason of the tasks a plan with stopWhenFull did not weigh. */
export const fullWaitingReason = 'every node\'s slots are taken this round';

/**
 * How `node` could run `task`, or null when it cannot: it must be alive with a slot limit
 * above zero and have the model installed; for a capability task it needs an agent with
 * that capability (proficiency above zero) whose model is installed (and is the task's
 * model when the task names one). Among several such agents the most proficient wins,
 * then one whose model is in VRAM, then the smaller agent id.
 */
export function candidateOn(task: Readonly<TaskRecord>, node: NodeView): Candidate | null {
  if (!node.alive || node.concurrencyLimit <= 0) return null;
  const { model, capability } = task.input;
  if (capability === null) {
    if (model === null || !hasModel(node.modelsInstalled, model)) return null;
    return { node, model, agentId: null, proficiency: 1 };
  }
  let best: Candidate | null = null;
  for (const agent of node.agents) {
    const skill = agent.capabilities.find((entry) => entry.name === capability);
    if (skill === undefined || !(skill.proficiency > 0)) continue;
    if (model !== null && !sameModel(agent.model, model)) continue;
    if (!hasModel(node.modelsInstalled, agent.model)) continue;
    const candidate: Candidate = { node, model: agent.model, agentId: agent.id, proficiency: Math.min(1, skill.proficiency) };
    if (best === null || better(candidate, best)) best = candidate;
  }
  return best;
}

function better(a: Candidate, b: Candidate): boolean {
  if (a.proficiency !== b.proficiency) return a.proficiency > b.proficiency;
  const aWarm = hasModel(a.node.modelsLoaded, a.model);
  const bWarm = hasModel(b.node.modelsLoaded, b.model);
  if (aWarm !== bWarm) return aWarm;
  return (a.agentId ?? '') < (b.agentId ?? '');
}

/** Every node that could run the task now (ignoring how busy it is), in node id order. */
export function eligibleNodes(task: Readonly<TaskRecord>, nodes: readonly NodeView[]): Candidate[] {
  const candidates: Candidate[] = [];
  for (const node of nodes) {
    const candidate = candidateOn(task, node);
    if (candidate !== null) candidates.push(candidate);
  }
  return candidates.sort((a, b) => compareIds(a.node.id, b.node.id));
}

function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface EstimateOptions {
  /** The model to run with (a capability task's agent model); defaults to the task's. */
  model?: string;
  /** Generations to count as running on top of node.running (this round's assignments). */
  extraRunning?: number;
  /** Models to count as loaded on top of node.modelsLoaded (this round's assignments). */
  extraLoaded?: readonly string[];
  /** The model is being loaded on the node and should be ready in this many ms: the load costs no more. */
  loadReadyInMs?: number;
  /**
   * Speed to assume when the node has measured none of its models (clusterSpeedPrior:
   * what the other nodes measured); estimateDefaults.tokensPerSecond when absent.
   */
  unmeasuredTokensPerSecond?: number;
}

/** What an estimate needs to know about a piece of work: a task, or a gateway request. */
export interface WorkShape {
  model: string;
  /** Prompt, system prompt and messages together. */
  promptCharacters: number;
  /** Expected output tokens; estimateDefaults.outputTokens when unknown. */
  outputTokens?: number;
}

function expectedOutputTokens(options: Readonly<Record<string, unknown>> | null): number | undefined {
  const requested = options?.['num_predict'];
  // num_predict -1 / -2 mean "until done" / "fill the context" in Ollama: no better guess.
  if (typeof requested === 'number' && Number.isFinite(requested) && requested > 0) return Math.min(requested, 131_072);
  return undefined;
}

/** The shape of a task's work, with `model` for capability tasks (the chosen agent's). */
export function workShapeOf(task: Readonly<TaskRecord>, model?: string): WorkShape {
  const chosen = model ?? task.input.model;
  if (chosen === null) throw new Error(`task ${task.id} names no model; pass the agent's model to estimate it`);
  let promptCharacters = (task.input.prompt?.length ?? 0) + (task.input.system?.length ?? 0);
  for (const message of task.input.messages ?? []) promptCharacters += message.content.length;
  const outputTokens = expectedOutputTokens(task.input.options);
  return outputTokens === undefined ? { model: chosen, promptCharacters } : { model: chosen, promptCharacters, outputTokens };
}

/**
 * Estimated ms from now until the work completes on `node`: queue wait (when every slot
 * is taken) + model load (zero when the model is in VRAM) + prompt evaluation + generation
 * at the node's measured tokens/s (expectedTokensPerSecond), slowed by the generations
 * running beside it.
 */
export function estimateWorkMs(work: WorkShape, node: NodeView, options: Omit<EstimateOptions, 'model'> = {}): number {
  const model = work.model;
  const running = node.running + (options.extraRunning ?? 0);
  const speed = expectedTokensPerSecond(node, model) ?? options.unmeasuredTokensPerSecond ?? estimateDefaults.tokensPerSecond;
  const promptMs = (work.promptCharacters / estimateDefaults.charactersPerToken) / (speed * estimateDefaults.promptSpeedup) * 1000;
  const outputTokens = work.outputTokens ?? estimateDefaults.outputTokens;
  const limit = Math.max(1, node.concurrencyLimit);
  // It runs once it has a slot: beside at most limit - 1 others, however many wait.
  const beside = Math.min(running, limit - 1);
  const generationMs = outputTokens / (speed / (1 + estimateDefaults.contentionPerRunning * beside)) * 1000;
  const runMs = promptMs + generationMs;
  const warm = hasModel(node.modelsLoaded, model) || hasModel(options.extraLoaded ?? [], model);
  let loadMs = 0;
  if (!warm) {
    const size = node.modelSizeBytes?.[modelKey(model)];
    const rate = node.loadBytesPerSecond;
    if (size === undefined) loadMs = estimateDefaults.modelLoadMs;
    else if (rate !== undefined && Number.isFinite(rate) && rate > 0) loadMs = size / rate * 1000;
    else loadMs = estimateDefaults.modelLoadBaseMs + size / estimateDefaults.modelLoadBytesPerSecond * 1000;
    if (options.loadReadyInMs !== undefined) loadMs = Math.min(loadMs, Math.max(0, options.loadReadyInMs));
  }
  // With every slot busy: the first slot frees when the node's soonest attempt ends (when
  // known), and each task queued before this one takes a share of a run.
  let queueWaitMs = 0;
  if (running >= limit) {
    queueWaitMs = node.slotFreeInMs === undefined
      ? (running - limit + 1) * runMs / limit
      : node.slotFreeInMs + (running - limit) * runMs / limit;
  }
  return Math.round(queueWaitMs + loadMs + runMs);
}

/**
 * What to expect of `model` on a node that has measured nothing: the median of what the
 * nodes that have measured it (or, scaled, their other models) expect; undefined when no
 * node has measured anything. With one default for every unmeasured node, a node known to
 * be slow looks no worse than one never tried, and a node whose early reading says it is
 * slow on one model looks better than the unknown ones on the others.
 */
export function clusterSpeedPrior(nodes: readonly NodeView[], model: string): number | undefined {
  const speeds: number[] = [];
  for (const node of nodes) {
    const speed = expectedTokensPerSecond(node, model);
    if (speed !== undefined) speeds.push(speed);
  }
  if (speeds.length === 0) return undefined;
  speeds.sort((a, b) => a - b);
  const middle = Math.floor(speeds.length / 2);
  return speeds.length % 2 === 1 ? speeds[middle] : (speeds[middle - 1]! + speeds[middle]!) / 2;
}

/**
 * estimateWorkMs for a task. Nodes compute this for their own bids; the leader uses it
 * when a bid is missing. `options.model` is the model a capability task would run with.
 */
export function estimateCompletionMs(task: Readonly<TaskRecord>, node: NodeView, options: EstimateOptions = {}): number {
  return estimateWorkMs(workShapeOf(task, options.model), node, options);
}

/**
 * For the gateway, which places a request at once rather than through the log: the alive
 * nodes with the model, fastest estimate first (a full node ranks by its queue wait), ties
 * by node id. Empty when no alive node has the model.
 */
export function rankNodesForRequest(work: WorkShape, nodes: readonly NodeView[]): { node: NodeView; estimateMs: number }[] {
  return nodes
    .filter((node) => node.alive && node.concurrencyLimit > 0 && hasModel(node.modelsInstalled, work.model))
    .map((node) => ({ node, estimateMs: estimateWorkMs(work, node) }))
    .sort((a, b) => a.estimateMs - b.estimateMs || compareIds(a.node.id, b.node.id));
}

function bidKey(taskId: string, node: string): string {
  return `${taskId}\u0000${node}`;
}

function describeNeed(task: Readonly<TaskRecord>): string {
  const { model, capability } = task.input;
  if (capability === null) return `model ${model}`;
  return model === null ? `an agent with capability ${capability}` : `an agent with capability ${capability} on model ${model}`;
}

/** Why no node in `nodes` can take the task at all, or null when some alive node could. */
function ineligibleReason(task: Readonly<TaskRecord>, nodes: readonly NodeView[]): string | null {
  if (task.pinnedNode !== null) {
    const pinned = nodes.find((node) => node.id === task.pinnedNode);
    if (pinned === undefined) return `pinned to node ${task.pinnedNode}, which is not in the cluster`;
    if (!pinned.alive) return `pinned to node ${nodeLabel(pinned)}, which is not alive`;
    if (candidateOn(task, pinned) === null) return `pinned to node ${nodeLabel(pinned)}, which lacks ${describeNeed(task)}`;
    return null;
  }
  if (eligibleNodes(task, nodes).length > 0) return null;
  const openUp = (node: NodeView): NodeView => ({ ...node, concurrencyLimit: Math.max(1, node.concurrencyLimit) });
  if (nodes.some((node) => node.alive && candidateOn(task, openUp(node)) !== null)) {
    return `the nodes with ${describeNeed(task)} take no work (concurrency limit 0)`;
  }
  const anyNode = nodes.some((node) => candidateOn(task, { ...openUp(node), alive: true }) !== null);
  return anyNode ? `no alive node has ${describeNeed(task)}` : `no node has ${describeNeed(task)}`;
}

/**
 * Why a queued task is still queued, for people (the Task view's waitingFor); null for a
 * task that is not queued or could be placed now. Any node can compute it from its own
 * gossip view, so it costs no log entries.
 */
export function waitingReason(state: ReplicatedState, task: Readonly<TaskRecord>, nodes: readonly NodeView[], nowMs: number): string | null {
  if (task.status !== 'queued') return null;
  const lasting = lastingWaitingReason(state, task, nodes, nowMs);
  if (lasting !== null) return lasting;
  const load = logLoad(state);
  const candidates = task.pinnedNode === null ? eligibleNodes(task, nodes) : eligibleNodes(task, nodes.filter((node) => node.id === task.pinnedNode));
  if (candidates.every((candidate) => freeSlots(candidate.node, load) <= 0)) {
    return candidates.length === 1
      ? `node ${nodeLabel(candidates[0]!.node)} is busy (${candidates[0]!.node.concurrencyLimit} of ${candidates[0]!.node.concurrencyLimit} slots taken)`
      : `all ${candidates.length} nodes with ${describeNeed(task)} are busy`;
  }
  return null;
}

/**
 * The part of waitingReason that does not depend on how busy the nodes are: pending
 * dependencies, retry backoff, no alive node with the model (or the pinned node unfit).
 * Cheap (no pass over the running tasks): the answer to a submit carries it, since a task
 * no node can run should say so at once, while "busy" would be stale before it is read.
 */
export function lastingWaitingReason(state: ReplicatedState, task: Readonly<TaskRecord>, nodes: readonly NodeView[], nowMs: number): string | null {
  if (task.status !== 'queued') return null;
  const pending = pendingDependencies(state, task);
  if (pending.length > 0) return `dependencies ${pending.join(', ')}`;
  if (task.notBefore !== null && task.notBefore > nowMs) return `retry backoff for another ${task.notBefore - nowMs} ms`;
  return ineligibleReason(task, nodes);
}

/** What the log has on each node: assigned or running attempts, and the running ones. */
interface LogLoad {
  inFlight: ReadonlyMap<string, number>;
  running: ReadonlyMap<string, number>;
}

function logLoad(state: ReplicatedState): LogLoad {
  const running = new Map<string, number>();
  for (const record of state.tasksWithStatus('running')) {
    const nodeId = record.assignedNode as string;
    running.set(nodeId, (running.get(nodeId) ?? 0) + 1);
  }
  return { inFlight: state.inFlightByNode(), running };
}

/** A task as the API shows it, with waitingFor filled in from this node's view of the cluster. */
export function describeTask(state: ReplicatedState, id: string, nodes: readonly NodeView[], nowMs: number): Task | undefined {
  const record = state.getTaskRecord(id);
  if (record === undefined) return undefined;
  const task = state.toTask(record);
  if (task.status === 'queued') task.waitingFor = waitingReason(state, record, nodes, nowMs);
  return task;
}

/**
 * Free slots: the concurrency limit less the attempts the log has on the node (exact) less
 * the generations the node reports beyond the tasks the log has running there (gateway
 * requests; from a heartbeat up to a few seconds old, which errs on the busy side when a
 * task has just finished and on the idle side only for gateway work that just began).
 */
function freeSlots(node: NodeView, load: LogLoad): number {
  const other = Math.max(0, node.running - (load.running.get(node.id) ?? 0));
  return node.concurrencyLimit - (load.inFlight.get(node.id) ?? 0) - other;
}

/**
 * About how long until `node`'s first slot frees: the least remaining time among the
 * attempts the log has on it, each estimated as if it ran alone (load when its model is
 * still not in VRAM, prompt and generation at the node's speed) less the time since it
 * was assigned or started. Undefined when the log has nothing on the node.
 */
export function slotFreeInMs(
  state: ReplicatedState, node: NodeView, nowMs: number, inFlight: ReadonlyMap<string, readonly Readonly<TaskRecord>[]> = inFlightRecordsByNode(state),
): number | undefined {
  const alone: NodeView = { ...node, running: 0, slotFreeInMs: undefined };
  let soonest: number | undefined;
  for (const record of inFlight.get(node.id) ?? []) {
    const attempt = record.attempts.at(-1);
    const model = attempt?.model ?? record.input.model;
    if (attempt === undefined || model === null) continue;
    const totalMs = estimateWorkMs(workShapeOf(record, model), alone);
    const since = attempt.startedAt ?? attempt.assignedAt;
    const remaining = Math.max(0, totalMs - Math.max(0, nowMs - since));
    if (soonest === undefined || remaining < soonest) soonest = remaining;
  }
  return soonest;
}

/** The assigned and running attempts' tasks, by node: one pass over the log's in-flight tasks. */
function inFlightRecordsByNode(state: ReplicatedState): Map<string, Readonly<TaskRecord>[]> {
  const byNode = new Map<string, Readonly<TaskRecord>[]>();
  for (const status of ['assigned', 'running'] as const) {
    for (const record of state.tasksWithStatus(status)) {
      const nodeId = record.assignedNode as string;
      const list = byNode.get(nodeId);
      if (list === undefined) byNode.set(nodeId, [record]);
      else list.push(record);
    }
  }
  return byNode;
}

/**
 * One scheduling round: ready tasks in order (readyTasks), each to its best node with a
 * free slot. Bids are the nodes' own estimates; for a node given work earlier in this
 * round, the bid is raised by what that work adds (our estimate with and without it).
 */
export function planAssignments(
  state: ReplicatedState, nodes: readonly NodeView[], bids: readonly Bid[], nowMs: number, options: PlanOptions = {},
): PlanResult {
  const assignmentsMax = options.assignmentsMax ?? limits.assignmentsPerPlanMax;
  const bidByKey = new Map<string, number>();
  for (const bid of bids) {
    if (Number.isFinite(bid.estimateMs) && bid.estimateMs >= 0) bidByKey.set(bidKey(bid.taskId, bid.node), bid.estimateMs);
  }
  const load = logLoad(state);
  const slots = new Map<string, number>();
  const added = new Map<string, number>();
  const addedModels = new Map<string, string[]>();
  const deferred = new Map<string, number>();
  for (const node of nodes) slots.set(node.id, freeSlots(node, load));
  // Free slots on alive nodes: only they can take an assignment (candidateOn).
  let freeTotal = 0;
  for (const node of nodes) if (node.alive) freeTotal += Math.max(0, slots.get(node.id) ?? 0);
  // Attempts assigned but not yet started take a slot and will run beside the new task:
  // count them as running. A full node's wait comes from what it runs (computed once per
  // round, only for nodes with no free slot: the others have no wait).
  let inFlightRecords: Map<string, Readonly<TaskRecord>[]> | undefined;
  const views = nodes.map((node): NodeView => {
    const inFlight = load.inFlight.get(node.id) ?? 0;
    const view = inFlight > node.running ? { ...node, running: inFlight } : node;
    if ((slots.get(node.id) ?? 0) > 0) return view;
    inFlightRecords ??= inFlightRecordsByNode(state);
    const wait = slotFreeInMs(state, view, nowMs, inFlightRecords);
    return wait === undefined ? view : { ...view, slotFreeInMs: wait };
  });
  const viewById = new Map(views.map((view) => [view.id, view]));

  // Eligibility depends only on (model, capability, pinned node), and a large queue holds
  // few distinct ones: compute it once per kind and round (10k queued x 64 nodes: 129 ms
  // without the cache).
  const eligibility = new Map<string, { ineligible: string | null; candidates: Candidate[] }>();
  const priors = new Map<string, number | undefined>();
  const priorFor = (model: string): number | undefined => {
    if (!priors.has(model)) priors.set(model, clusterSpeedPrior(nodes, model));
    return priors.get(model);
  };
  const assignments: Assignment[] = [];
  const waiting: Waiting[] = [];
  const preloads: Preload[] = [];
  const loading = options.loading;
  for (const { record } of readyTasks(state, nowMs, options.agingStepMs)) {
    if (assignments.length >= assignmentsMax) {
      waiting.push({ taskId: record.id, reason: 'waiting for the next scheduling round' });
      continue;
    }
    if (options.stopWhenFull === true && freeTotal <= 0) {
      waiting.push({ taskId: record.id, reason: fullWaitingReason });
      continue;
    }
    const kind = JSON.stringify([record.input.model, record.input.capability, record.pinnedNode]);
    let known = eligibility.get(kind);
    if (known === undefined) {
      const ineligible = ineligibleReason(record, nodes);
      const pool = record.pinnedNode === null ? nodes : nodes.filter((node) => node.id === record.pinnedNode);
      known = { ineligible, candidates: ineligible === null ? eligibleNodes(record, pool) : [] };
      eligibility.set(kind, known);
    }
    if (known.ineligible !== null) {
      waiting.push({ taskId: record.id, reason: known.ineligible });
      continue;
    }
    const triedOn = record.attempts.length === 0 || record.pinnedNode !== null ? null
      : new Set(record.attempts.filter((attempt) => attempt.status === 'failed' || attempt.status === 'lost').map((attempt) => attempt.node));
    const avoid = record.pinnedNode === null ? options.avoidNodes ?? null : null;
    const candidates = retryCandidates(known.candidates, triedOn, avoid, (candidate) => (slots.get(candidate.node.id) ?? 0) > 0);
    // Busy nodes count too: a task is better left queued for a few seconds when a much
    // faster node will free a slot soon than started on a slow free one (late binding). A
    // busy node's estimate includes the tasks already left waiting for it this round, so a
    // queue deeper than it can absorb spills over to free nodes.
    let best: Choice | null = null;
    let bestBusy: Choice | null = null;
    /** Free nodes where the model is cold: their cost as is and with the model already loaded. */
    const coldFree: ColdChoice[] = [];
    for (const candidate of candidates) {
      const nodeId = candidate.node.id;
      const free = (slots.get(nodeId) ?? 0) > 0;
      const extraRunning = (added.get(nodeId) ?? 0) + (free ? 0 : deferred.get(nodeId) ?? 0);
      const extraLoaded = addedModels.get(nodeId) ?? [];
      const prior = priorFor(candidate.model);
      const readyAt = loading?.get(nodeModelKey(nodeId, candidate.model));
      const estimate: EstimateOptions = {
        model: candidate.model, extraRunning, extraLoaded,
        ...(prior === undefined ? {} : { unmeasuredTokensPerSecond: prior }),
        ...(readyAt === undefined ? {} : { loadReadyInMs: readyAt - nowMs }),
      };
      // A node does not know of a load the leader asked for until it shows in its Ollama: its
      // bid would count the whole load, so the leader's own estimate stands in for it.
      const bid = free && readyAt === undefined ? bidByKey.get(bidKey(record.id, nodeId)) : undefined;
      const view = viewById.get(nodeId) ?? candidate.node;
      const estimateMs = bid === undefined
        ? estimateCompletionMs(record, view, estimate)
        : bid + estimateCompletionMs(record, view, estimate) - estimateCompletionMs(record, view, { ...estimate, extraRunning: 0, extraLoaded: [] });
      const cost = estimateMs / candidate.proficiency;
      // Candidates come in node id order, so keeping the first of equal costs breaks ties by id.
      if (free) {
        const cold = readyAt === undefined && !hasModel(view.modelsLoaded, candidate.model) && !hasModel(extraLoaded, candidate.model);
        let choice: Choice = { candidate, estimateMs, cost };
        if (cold && (options.loadRegret !== undefined || loading !== undefined)) {
          const warmMs = estimateCompletionMs(record, view, { ...estimate, extraLoaded: [...extraLoaded, candidate.model] });
          const loadMs = Math.max(0, Math.round(estimateMs - warmMs));
          choice = { candidate, estimateMs, cost, loadMs };
          if (options.loadRegret !== undefined) coldFree.push({ candidate, estimateMs, cost, loadMs, warmCost: warmMs / candidate.proficiency });
        }
        if (best === null || cost < best.cost) best = choice;
      } else if (candidate.node.alive && candidate.node.concurrencyLimit > 0 && (bestBusy === null || cost < bestBusy.cost)) {
        bestBusy = { candidate, estimateMs, cost };
      }
    }
    // Held at most as long as waiting was expected to save: a node kept busy by work ahead
    // of this task (higher priorities) would otherwise hold it for as long as that lasts.
    const heldMs = nowMs - readySinceMs(record);
    if (best !== null && bestBusy !== null && record.pinnedNode === null && bestBusy.cost * busyPreferenceMargin < best.cost
      && heldMs < best.estimateMs - bestBusy.estimateMs) {
      const busyId = bestBusy.candidate.node.id;
      deferred.set(busyId, (deferred.get(busyId) ?? 0) + 1);
      waiting.push({
        taskId: record.id,
        reason: `waiting for a slot on node ${nodeLabel(bestBusy.candidate.node)}, expected to finish sooner there (~${Math.round(bestBusy.estimateMs)} ms) than on a free node now (~${Math.round(best.estimateMs)} ms)`,
      });
      continue;
    }
    if (best === null) {
      // Every candidate is busy: the task waits for the best of them, and later tasks' estimates
      // for that node count it (without this, work left waiting there this round was invisible
      // to lower-priority tasks deciding whether to wait for the same node).
      if (bestBusy !== null) {
        const busyId = bestBusy.candidate.node.id;
        deferred.set(busyId, (deferred.get(busyId) ?? 0) + 1);
      }
      waiting.push({
        taskId: record.id,
        reason: candidates.length === 1
          ? `node ${nodeLabel(candidates[0]!.node)} is busy (all ${candidates[0]!.node.concurrencyLimit} slots taken)`
          : `all ${candidates.length} nodes with ${describeNeed(record)} are busy`,
      });
      continue;
    }
    const buy = options.loadRegret !== undefined && record.pinnedNode === null ? rentOrBuy(options.loadRegret, best, coldFree) : null;
    if (buy !== null && loading !== undefined) {
      preloads.push({ node: buy.candidate.node.id, model: buy.candidate.model, loadMs: buy.loadMs });
      loading.set(nodeModelKey(buy.candidate.node.id, buy.candidate.model), nowMs + buy.loadMs);
    } else if (buy !== null) {
      best = buy;
    }
    // A task sent to a node where its model is cold loads it there: later rounds count only
    // the rest of that load, until the node shows the model in VRAM.
    if (loading !== undefined && best.loadMs !== undefined) loading.set(nodeModelKey(best.candidate.node.id, best.candidate.model), nowMs + best.loadMs);
    const nodeId = best.candidate.node.id;
    slots.set(nodeId, (slots.get(nodeId) ?? 0) - 1);
    freeTotal -= 1;
    added.set(nodeId, (added.get(nodeId) ?? 0) + 1);
    addedModels.set(nodeId, [...(addedModels.get(nodeId) ?? []), best.candidate.model]);
    assignments.push({
      taskId: record.id, node: nodeId, attempt: record.attempt + 1, model: best.candidate.model,
      agentId: best.candidate.agentId, estimateMs: Math.round(best.estimateMs),
    });
  }
  return { assignments, waiting, preloads };
}

/**
 * The nodes a task may go to this round. A node that keeps failing everyone's generations
 * (avoid) is left out while any other node can run the task. A node where this task already
 * failed or was lost (tried) is left out while an untried one has a free slot, or when no
 * tried one has: a retry must not wait minutes for a busy untried node while a tried one
 * sits idle (its attempt may have failed for a reason of its own, such as a short timeout).
 */
function retryCandidates(
  all: Candidate[], tried: ReadonlySet<string> | null, avoid: ReadonlySet<string> | null, free: (candidate: Candidate) => boolean,
): Candidate[] {
  const healthy = without(all, avoid) ?? all;
  const untried = without(healthy, tried);
  if (untried === null || untried.some(free) || !healthy.some(free)) return untried ?? healthy;
  return healthy;
}

/**
 * Since when a queued task has been ready to place: its submission, the end of its last
 * attempt, or the end of its retry backoff, whichever is latest (dependencies finishing later
 * are not counted: the hold it bounds then ends sooner, never later).
 */
function readySinceMs(record: Readonly<TaskRecord>): number {
  let since = record.createdAt;
  const last = record.attempts[record.attempts.length - 1];
  if (last !== undefined) since = Math.max(since, last.endedAt ?? last.assignedAt);
  if (record.notBefore !== null) since = Math.max(since, record.notBefore);
  return since;
}

/** The candidates on none of the given nodes, or null when that leaves none (or nothing is left out). */
function without(candidates: Candidate[], ...nodeSets: Array<ReadonlySet<string> | null>): Candidate[] | null {
  const sets = nodeSets.filter((set): set is ReadonlySet<string> => set !== null && set.size > 0);
  if (sets.length === 0) return null;
  const rest = candidates.filter((candidate) => !sets.some((set) => set.has(candidate.node.id)));
  return rest.length > 0 ? rest : null;
}

/** A candidate node for one task, with its estimate and cost (estimate / proficiency). */
interface Choice {
  candidate: Candidate;
  estimateMs: number;
  cost: number;
  /** The part of estimateMs that is loading the model, when it is cold on a free node (and the plan tracks loads). */
  loadMs?: number;
}

/** A free node where the task's model is cold, with its load and its cost were the model already loaded. */
interface ColdChoice extends Choice {
  loadMs: number;
  warmCost: number;
}

/** Entries kept in a loadRegret map at most; beyond, it starts over (a bound, not a policy). */
export const loadRegretEntriesMax = 4_096;

/**
 * The ski-rental step for one task about to go to `best`: every free node where the task's
 * model is cold and would have beaten `best` had the model been loaded adds the difference
 * to its regret; the node whose regret first covers its load cost is returned (it gets the
 * model loaded: with the task, or by a preload), and its regret starts over. Null: rent.
 */
function rentOrBuy(regret: Map<string, number>, best: Choice, coldFree: readonly ColdChoice[]): ColdChoice | null {
  let buy: { choice: ColdChoice; key: string; margin: number } | null = null;
  for (const option of coldFree) {
    if (option.candidate === best.candidate) continue;
    const gain = best.cost - option.warmCost;
    if (!(gain > 0)) continue;
    const key = nodeModelKey(option.candidate.node.id, option.candidate.model);
    if (!regret.has(key) && regret.size >= loadRegretEntriesMax) regret.clear();
    const total = (regret.get(key) ?? 0) + gain;
    regret.set(key, total);
    const loadCost = option.cost - option.warmCost;
    const margin = total - loadCost;
    if (margin >= 0 && (buy === null || margin > buy.margin)) buy = { choice: option, key, margin };
  }
  if (buy === null) return null;
  regret.delete(buy.key);
  return buy.choice;
}

/** The command that commits an assignment, fenced by the leader's term. */
export function assignmentCommand(assignment: Assignment, term: number, nowMs: number): CommandOf<'task.assign'> {
  return {
    type: 'task.assign', id: assignment.taskId, node: assignment.node, attempt: assignment.attempt, term,
    model: assignment.model, agentId: assignment.agentId, at: nowMs,
  };
}
