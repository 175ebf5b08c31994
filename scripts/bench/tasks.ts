// Task benchmarks (issue 4) on real daemon processes over loopback, each with its own
// Ollama stand-in: (a) end-to-end tasks/s and submit-to-committed latency on three
// daemons with instant stand-ins; (c) on the same cluster, how much later a watcher on
// another node sees the first token than a watcher on the executing node; (b) placement
// quality on four stand-ins of different speeds against two simple dispatchers sending
// the same workload straight to the stand-ins, and against a lower bound.
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism } from 'node:os';
import { setLogLevel } from '../../daemon/log.ts';
import { Storage } from '../../daemon/storage.ts';
import type { ClusterStatus } from '../../protocol/api.ts';
import type { Task, TaskEvent } from '../../protocol/tasks.ts';
import { startTaskCluster, waitFinished, waitModelsGossiped, type TaskCluster } from '../../tests/loopback/tasks-helpers.ts';
import { approximateTokenCount } from '../../tests/ollama-standin/catalog.ts';
import { startStandin, type Standin, type StandinOptions } from '../../tests/ollama-standin/server.ts';
import type { MeshDaemon } from '../../tests/support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../../tests/support/processes.ts';
import { mean, median, percentile, type BenchRow } from './report.ts';
import { sseData } from '../../tests/support/sse.ts';

const section = 'tasks';
/** Goals from issue 4. */
const tasksPerSecondGoal = 1_000;
const submitP99GoalMs = 20;
const streamDelayGoalMs = 5;
const versusRoundRobinGoal = 0.7;
const versusLowerBoundGoal = 1.1;
/** Bound on any single HTTP request of the benchmark. */
const requestTimeoutMs = 20_000;
/** A client retries a 503 (no leader reachable for a moment) this often, as the loopback suite does. */
const retries503Max = 5;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
}

/**
 * The load generator's HTTP client: node:http on keep-alive connections, as lean as a load
 * tool should be (fetch costs several times the CPU per request, and the generator shares
 * the two cores with the daemons it measures; its CPU is reported in its own row).
 */
const clientAgent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function postJson(url: string, token: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: 'POST',
      agent: clientAgent,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      timeout: requestTimeoutMs,
    }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error(`no answer from ${url} within ${requestTimeoutMs} ms`)));
    request.on('error', reject);
    request.end(body);
  });
}

/** POST /api/tasks; retries 503s with the same idempotency key. Returns the task, or throws with the answer. */
async function submitTask(daemon: MeshDaemon, token: string, body: Record<string, unknown>, counters: { retries: number }): Promise<Task> {
  const text = JSON.stringify(body);
  for (let tries = 0; ; tries += 1) {
    const response = await postJson(`${daemon.apiUrl}/api/tasks`, token, text);
    if (response.status === 201 || response.status === 200) return JSON.parse(response.text) as Task;
    if (response.status === 503 && tries < retries503Max) {
      counters.retries += 1;
      await sleep(200);
      continue;
    }
    throw new Error(`POST /api/tasks on ${daemon.spec.name} answered ${response.status}: ${response.text.slice(0, 300)}`);
  }
}

/**
 * CPU time used so far, in ms: each daemon's (from /proc, user + system, 10 ms steps), this
 * process's (the load generator and the stand-ins), and the whole machine's busy time
 * (from /proc/stat, every process on it, ours or not). Null where /proc is missing.
 */
interface CpuSample { daemonsMs: number | null; benchMs: number; machineBusyMs: number | null }
const clockTicksPerSecond = 100;

function procTicks(path: string, pick: (fields: string[]) => number): number | null {
  try {
    return pick(readFileSync(path, 'utf8').trim().split(/\s+/));
  } catch {
    return null;
  }
}

function cpuSample(daemons: MeshDaemon[]): CpuSample {
  let daemonsMs: number | null = 0;
  for (const daemon of daemons) {
    const pid = daemon.child?.pid;
    // /proc/<pid>/stat: utime and stime are fields 14 and 15; the command name (field 2)
    // has no spaces here ("node").
    const ticks = pid === undefined ? null : procTicks(`/proc/${pid}/stat`, (fields) => Number(fields[13]) + Number(fields[14]));
    daemonsMs = ticks === null || daemonsMs === null ? null : daemonsMs + (ticks * 1000) / clockTicksPerSecond;
  }
  const usage = process.cpuUsage();
  // /proc/stat's first line: cpu user nice system idle iowait irq softirq steal ...
  const busy = procTicks('/proc/stat', (fields) => [1, 2, 3, 6, 7, 8].reduce((sum, index) => sum + Number(fields[index]), 0));
  return { daemonsMs, benchMs: (usage.user + usage.system) / 1000, machineBusyMs: busy === null ? null : (busy * 1000) / clockTicksPerSecond };
}

async function taskCounts(daemon: MeshDaemon): Promise<ClusterStatus['tasks']> {
  const { status, body } = await daemon.api<ClusterStatus>('/api/status/cluster', { timeoutMs: 3_000 });
  if (status !== 200) throw new Error(`GET /api/status/cluster on ${daemon.spec.name} answered ${status}`);
  return body.tasks;
}

/**
 * The disk's side of a submit: synced LevelDB writes (one small put each, as a Raft Ready is
 * one synced batch) from this process every `everyMs` while `work` runs, timed. A commit
 * needs one such write on the leader and one on a follower, after any write either was
 * already doing; the daemons make several per task, on the same disk.
 */
async function syncedWriteLatency<T>(everyMs: number, work: () => Promise<T>): Promise<{ result: T; latenciesMs: number[] }> {
  const dir = tempDir('bench-disk');
  const storage = await Storage.open(dir);
  const latenciesMs: number[] = [];
  let running = true;
  const probe = (async () => {
    for (let n = 0; running; n += 1) {
      const started = performance.now();
      await storage.db.batch([{ type: 'put', sublevel: storage.raft, key: `probe-${n % 64}`, value: 'x'.repeat(200) }], { sync: true });
      latenciesMs.push(performance.now() - started);
      await sleep(everyMs);
    }
  })();
  try {
    const result = await work();
    return { result, latenciesMs };
  } finally {
    running = false;
    await probe;
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function waitNoneInFlight(daemon: MeshDaemon, what: string, timeoutMs: number): Promise<void> {
  await waitUntil(what, async () => {
    const counts = await taskCounts(daemon);
    return (counts.queued ?? 0) + (counts.assigned ?? 0) + (counts.running ?? 0) === 0;
  }, timeoutMs, 50);
}

// ---------------------------------------------------------------------------------------
// (a) throughput and submit latency, (c) streaming, on three daemons with instant stand-ins

/** The model only node 0's stand-in has, slow and cold, so watchers connect before its first token. */
const streamModel = 'stream:1b';
const instantModel = 'llama3.2:1b';

async function startThroughputCluster(group: ProcessGroup): Promise<TaskCluster> {
  const instant: StandinOptions = { tokensPerSecond: 1_000_000, responseTokens: 4, maxConcurrency: 1_024, maxQueue: 4_096, logFile: null };
  const cluster = await startTaskCluster(group, ['tp-a', 'tp-b', 'tp-c'].map((name, index) => ({
    name,
    // Generation slots per node: the stand-ins answer at once, so the orchestration is what is measured.
    concurrency: 128,
    standin: { ...instant, models: index === 0 ? [instantModel, { name: streamModel, tokensPerSecond: 50, coldLoadMs: 1_000 }] : [instantModel] },
  })), 90_000);
  await waitModelsGossiped(cluster, 30_000);
  return cluster;
}

/** `clients` workers in a closed loop, each taking the next of `count` items until none is left. */
async function closedLoop(count: number, clients: number, submitOne: (n: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < count) await submitOne(next++);
  }));
}

async function benchThroughput(rows: BenchRow[], cluster: TaskCluster, taskCount: number, warmUpBurst: number, idleDiskMs: number[]): Promise<void> {
  const { daemons } = cluster;
  const tokens = daemons.map((daemon) => daemon.adminToken);
  const runId = Date.now().toString(36);
  const counters = { retries: 0 };
  /** Task n of a phase of instant tasks, on the nodes in turn. */
  const submitInstant = (phase: string, n: number): Promise<Task> => {
    const index = n % daemons.length;
    return submitTask(daemons[index]!, tokens[index]!, { model: instantModel, prompt: `${phase} ${n}`, idempotencyKey: `bench-${phase}-${runId}-${n}` }, counters);
  };

  // Warm-up, not measured: the daemons' code paths compiled by the JIT and their caches
  // filled, as in a cluster that has been up for a while: submits one at a time, then a
  // burst from many clients (the batched paths of a loaded cluster compile only under load;
  // without it the loaded figures are those of the first seconds after start, 30-40 % lower).
  for (let n = 0; n < 150; n += 1) await submitInstant('warm-up', n);
  const clients = 96;
  await closedLoop(warmUpBurst, clients, async (n) => {
    await submitInstant('warm-up-burst', n);
  });
  await waitNoneInFlight(daemons[0]!, 'the warm-up tasks to finish', 60_000);
  // Unloaded: one request at a time, so the latency is the path's, not a queue's.
  const unloadedMs: number[] = [];
  const disk = await syncedWriteLatency(20, async () => {
    for (let n = 0; n < 200; n += 1) {
      const started = performance.now();
      await submitInstant('one', n);
      unloadedMs.push(performance.now() - started);
    }
  });
  await waitNoneInFlight(daemons[0]!, 'the unloaded tasks to finish', 30_000);
  const before = await taskCounts(daemons[0]!);

  // Loaded: many clients at once, spread over the three nodes.
  const loadedMs: number[] = [];
  const failures: string[] = [];
  const started = performance.now();
  const cpuBefore = cpuSample(daemons);
  await closedLoop(taskCount, clients, async (n) => {
    const sent = performance.now();
    try {
      await submitInstant('throughput', n);
      loadedMs.push(performance.now() - sent);
    } catch (error) {
      failures.push((error as Error).message);
    }
  });
  const submittedMs = performance.now() - started;
  let counts = before;
  const finishedCount = () => (counts.completed ?? 0) + (counts.failed ?? 0) - (before.completed ?? 0) - (before.failed ?? 0);
  await waitUntil(`${loadedMs.length} accepted tasks to finish`, async () => {
    counts = await taskCounts(daemons[0]!);
    return finishedCount() >= loadedMs.length;
  }, 120_000, 20);
  const totalMs = performance.now() - started;
  const cpuAfter = cpuSample(daemons);
  const failedCount = (counts.failed ?? 0) - (before.failed ?? 0);
  const completedCount = (counts.completed ?? 0) - (before.completed ?? 0);
  const completedPerSecond = completedCount / (totalMs / 1000);
  const note = `${taskCount} tasks, ${clients} clients over 3 nodes; ${failures.length} refused, ${counters.retries} 503s retried, ${failedCount} failed`;
  if (failures.length > 0) process.stderr.write(`bench tasks: submit failures, first: ${failures[0]}\n`);
  rows.push({ section, name: `completed tasks/s end to end, 3 daemons, instant stand-ins (${note})`, value: completedPerSecond, unit: 'tasks/s', goal: { text: `>= ${tasksPerSecondGoal} tasks/s`, met: completedPerSecond >= tasksPerSecondGoal } });
  if (cpuBefore.daemonsMs !== null && cpuAfter.daemonsMs !== null && completedCount > 0) {
    const daemonsPerTask = (cpuAfter.daemonsMs - cpuBefore.daemonsMs) / completedCount;
    const benchPerTask = (cpuAfter.benchMs - cpuBefore.benchMs) / completedCount;
    rows.push({
      section, name: 'CPU per completed task while loaded: the 3 daemons together (baseline: this process, i.e. the load generator and the 3 stand-ins)',
      value: daemonsPerTask, unit: 'ms', baseline: { name: 'generator + stand-ins', value: benchPerTask },
    });
    if (cpuBefore.machineBusyMs !== null && cpuAfter.machineBusyMs !== null) {
      const cores = availableParallelism();
      rows.push({
        section, name: `machine busy while loaded, all processes (of ${cores} cores; 1,000 tasks/s would need at most ${((cores * 1000) / tasksPerSecondGoal).toFixed(1)} ms of CPU per task in all)`,
        value: (100 * (cpuAfter.machineBusyMs - cpuBefore.machineBusyMs)) / (cores * totalMs), unit: '%',
      });
    }
  }
  rows.push({ section, name: `submit rate while loaded (all ${finishedCount()} finished ${((totalMs - submittedMs) / 1000).toFixed(1)} s after the last 201)`, value: taskCount / (submittedMs / 1000), unit: 'tasks/s' });
  // Saturated: 96 clients keep the cluster at its limit, so the latency is the queue's
  // (Little's law: clients / throughput), reported for information.
  rows.push({ section, name: `POST /api/tasks until 201 p50, ${clients} clients in a closed loop (saturated)`, value: median(loadedMs), unit: 'ms', baseline: { name: '1 in flight', value: median(unloadedMs) } });
  rows.push({ section, name: `POST /api/tasks until 201 p99, ${clients} clients in a closed loop (saturated)`, value: percentile(loadedMs, 99), unit: 'ms', baseline: { name: '1 in flight', value: percentile(unloadedMs, 99) } });
  rows.push({ section, name: 'POST /api/tasks until 201 p99, 1 in flight (200 sequential)', value: percentile(unloadedMs, 99), unit: 'ms', goal: { text: `p99 <= ${submitP99GoalMs} ms`, met: percentile(unloadedMs, 99) <= submitP99GoalMs } });
  rows.push({
    section, name: `the disk meanwhile: one synced LevelDB write (as each Raft batch), p50 (${disk.latenciesMs.length} writes from this process during the 1-in-flight submits)`,
    value: median(disk.latenciesMs), unit: 'ms', baseline: { name: 'same, idle machine before the cluster started', value: median(idleDiskMs) },
  });
  rows.push({
    section, name: 'the disk meanwhile: one synced LevelDB write, p99 (a commit waits for one on the leader and one on a follower, after any write each had started)',
    value: percentile(disk.latenciesMs, 99), unit: 'ms', baseline: { name: 'idle machine', value: percentile(idleDiskMs, 99) },
  });

  // Open loop at half the measured capacity: submissions at a steady rate whatever the
  // answers, the way independent users load a service; the latency a user sees when the
  // cluster is busy but not saturated.
  const rate = Math.max(10, Math.round(completedPerSecond / 2));
  const openCount = Math.min(taskCount, rate * 5);
  const openMs: number[] = [];
  const openByNode: number[][] = daemons.map(() => []);
  const openStarted = performance.now();
  const inFlight: Array<Promise<void>> = [];
  for (let n = 0; n < openCount; n += 1) {
    await sleep(openStarted + (n * 1000) / rate - performance.now());
    const sent = performance.now();
    inFlight.push(submitInstant('open-loop', n).then(
      () => {
        openMs.push(performance.now() - sent);
        openByNode[n % daemons.length]!.push(performance.now() - sent);
      },
      (error: unknown) => { failures.push((error as Error).message); },
    ));
  }
  await Promise.all(inFlight);
  if (process.env['HIVEMESH_BENCH_DETAIL'] === '1') {
    // Which entry node the slow submits came through: the leader, or a follower that forwards.
    for (const [index, daemon] of daemons.entries()) {
      const { body } = await daemon.api<{ role: string }>('/api/status/cluster');
      const times = openByNode[index]!;
      process.stderr.write(`bench tasks: open loop through ${daemon.spec.name} (${body.role}): p50 ${median(times).toFixed(1)} ms, p99 ${percentile(times, 99).toFixed(1)} ms, max ${Math.max(...times).toFixed(1)} ms (${times.length})\n`);
    }
  }
  rows.push({ section, name: `POST /api/tasks until 201 p50, open loop at ${rate} tasks/s (half the measured capacity; ${openMs.length} tasks)`, value: median(openMs), unit: 'ms', baseline: { name: '1 in flight', value: median(unloadedMs) } });
  rows.push({
    section, name: `POST /api/tasks until 201 p99, open loop at ${rate} tasks/s`, value: percentile(openMs, 99), unit: 'ms', baseline: { name: '1 in flight', value: percentile(unloadedMs, 99) },
    goal: { text: `p99 <= ${submitP99GoalMs} ms`, met: percentile(openMs, 99) <= submitP99GoalMs },
  });
}

/**
 * Opens GET /api/tasks/:id/events (retrying while the node has not applied the task yet)
 * and reads until the final event; returns when the stream was open and when the first
 * output chunk arrived, on this process's monotonic clock.
 */
async function watchFirstOutput(daemon: MeshDaemon, taskId: string): Promise<{ connectedAt: number; firstOutputAt: number }> {
  const deadline = performance.now() + requestTimeoutMs;
  let response: Response;
  for (;;) {
    response = await fetch(`${daemon.apiUrl}/api/tasks/${taskId}/events`, {
      headers: { authorization: `Bearer ${daemon.adminToken}` },
      signal: AbortSignal.timeout(requestTimeoutMs),
    });
    if (response.status === 200 && response.body !== null) break;
    await response.body?.cancel();
    if (response.status !== 404 || performance.now() > deadline) throw new Error(`GET /api/tasks/${taskId}/events on ${daemon.spec.name} answered ${response.status}`);
    await sleep(5);
  }
  const connectedAt = performance.now();
  let firstOutputAt: number | null = null;
  for await (const event of sseData<TaskEvent>(response)) {
    if (event.type === 'output' && firstOutputAt === null) firstOutputAt = performance.now();
    if (event.type === 'final') {
      if (firstOutputAt === null) throw new Error(`the watcher on ${daemon.spec.name} saw no output for task ${taskId}`);
      return { connectedAt, firstOutputAt };
    }
  }
  throw new Error(`the event stream of task ${taskId} on ${daemon.spec.name} ended before its final event`);
}

async function benchStreaming(rows: BenchRow[], cluster: TaskCluster, trials: number): Promise<void> {
  const [executor, watcher] = cluster.daemons as [MeshDaemon, MeshDaemon, MeshDaemon];
  const submitter = cluster.daemons[2]!;
  const token = submitter.adminToken;
  const delaysMs: number[] = [];
  const counters = { retries: 0 };
  let late = 0;
  for (let trial = 0; trial < trials; trial += 1) {
    // Cold model: the first token comes 1 s after the task starts, well after both watchers are connected.
    cluster.standins[0]!.unload(streamModel);
    const task = await submitTask(submitter, token, { model: streamModel, prompt: `stream ${trial} ${Date.now()}`, options: { num_predict: 8 } }, counters);
    const [executorWatch, otherWatch] = await Promise.all([watchFirstOutput(executor, task.id), watchFirstOutput(watcher, task.id)]);
    // A watcher that connected after the first token would be replayed the buffer: not a live figure.
    if (Math.max(executorWatch.connectedAt, otherWatch.connectedAt) >= Math.min(executorWatch.firstOutputAt, otherWatch.firstOutputAt)) {
      late += 1;
      continue;
    }
    const [atExecutor, atWatcher] = [executorWatch.firstOutputAt, otherWatch.firstOutputAt];
    delaysMs.push(atWatcher - atExecutor);
  }
  rows.push({
    section, name: `first token: SSE watcher on another node minus SSE watcher on the executor, p50 (${delaysMs.length} tasks; ${late} left out: a watcher connected late)`, value: median(delaysMs), unit: 'ms',
    goal: { text: `p50 <= ${streamDelayGoalMs} ms`, met: median(delaysMs) <= streamDelayGoalMs },
  });
  rows.push({ section, name: 'first token: other node minus executor, p95', value: percentile(delaysMs, 95), unit: 'ms' });
}

// ---------------------------------------------------------------------------------------
// (b) placement quality

/** Node speeds (tokens/s), slowest first; each node runs `placementSlots` generations at once. */
const nodeSpeeds = [20, 40, 80, 160];
const placementSlots = 2;
const coldLoadMs = 3_000;
const placementModels = ['llama3.2:3b', 'qwen2.5:7b', 'mistral:7b'];
/** Which models are in VRAM on each node when a run starts (index = node): the fast nodes lack some. */
const warmAtStart: string[][] = [
  ['llama3.2:3b', 'qwen2.5:7b'],
  ['llama3.2:3b', 'qwen2.5:7b'],
  ['llama3.2:3b', 'mistral:7b'],
  ['llama3.2:3b'],
];

interface WorkItem {
  index: number;
  model: string;
  prompt: string;
  numPredict: number;
  /** When it is submitted, ms after the run starts. */
  arrivalMs: number;
}

/** A fixed, seeded workload: mixed models and lengths arriving at a steady pace. */
function placementWorkload(count: number, spacingMs: number): WorkItem[] {
  let seed = 0x5eed1234;
  const random = () => {
    // mulberry32: the same workload every run.
    seed = (seed + 0x6d2b79f5) | 0;
    let value = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    value = (value + Math.imul(value ^ (value >>> 7), 61 | value)) ^ value;
    return ((value ^ (value >>> 14)) >>> 0) / 4_294_967_296;
  };
  const lengths = [16, 16, 48, 48, 96, 192];
  return Array.from({ length: count }, (_, index) => ({
    index,
    model: placementModels[Math.floor(random() * placementModels.length)]!,
    prompt: `placement task ${index}: summarise the incident report`,
    numPredict: lengths[Math.floor(random() * lengths.length)]!,
    arrivalMs: index * spacingMs,
  }));
}

function placementStandinOptions(speed: number): StandinOptions {
  return { models: placementModels, tokensPerSecond: speed, coldLoadMs, maxConcurrency: placementSlots, maxQueue: 512, logFile: null };
}

/** Loads the start-of-run models into each stand-in's VRAM (an empty prompt only loads, as in Ollama). */
async function warmStandins(urls: string[]): Promise<void> {
  // Every load at once: the stand-in loads models independently, as Ollama does with room in VRAM.
  await Promise.all(urls.flatMap((url, node) => warmAtStart[node]!.map(async (model) => {
    const response = await fetch(`${url}/api/generate`, { method: 'POST', body: JSON.stringify({ model, prompt: '' }), signal: AbortSignal.timeout(requestTimeoutMs) });
    if (response.status !== 200) throw new Error(`warming ${model} on stand-in ${url} answered ${response.status}: ${await response.text()}`);
  })));
}

/** Prompt evaluation and generation of `item` at `speed` tokens/s, model warm, alone. */
function runMsAt(item: WorkItem, speed: number): number {
  // The stand-in evaluates a prompt twenty times faster than it generates.
  return (approximateTokenCount(item.prompt) / (speed * 20) + item.numPredict / speed) * 1000;
}

/** Lower bound per task: prompt evaluation and generation on the fastest node, model warm, no queueing. */
function lowerBoundMs(item: WorkItem): number {
  return runMsAt(item, Math.max(...nodeSpeeds));
}

/**
 * A tighter bound that no placement, online or not, can beat: each task alone on the node
 * where it would finish first, a model not in that node's VRAM at the start being ready no
 * sooner than one load after the run began (as if every node had started loading every
 * model at time 0). The optimum mean lies between this bound's mean and what any actual
 * schedule reaches; when this mean exceeds 1.1x lowerBoundMs's, the goal "at most 10 %
 * above the lower bound" cannot be met on this workload by any scheduler.
 */
function warmAwareBoundMs(item: WorkItem): number {
  return Math.min(...nodeSpeeds.map((speed, node) => {
    const readyAt = warmAtStart[node]!.includes(item.model) ? 0 : coldLoadMs;
    return Math.max(item.arrivalMs, readyAt) + runMsAt(item, speed) - item.arrivalMs;
  }));
}

/**
 * What a clairvoyant dispatcher achieves on the same workload, computed, not run: it knows
 * every task's exact duration on every node and pays no overhead; each task, in arrival
 * order, goes to the node and slot where it would finish first, a cold model costing its
 * load once per node (the load starts at the task's arrival). Not optimal in general, but
 * a scheduler that knows less and runs for real should not be expected to beat it, so it
 * shows how far above the lower bound this workload itself forces any placement.
 */
function clairvoyantGreedyMs(items: WorkItem[]): number[] {
  const slotFreeAt = nodeSpeeds.map(() => Array.from({ length: placementSlots }, () => 0));
  const loadedAt = nodeSpeeds.map((_, node) => new Map(warmAtStart[node]!.map((model) => [model, 0])));
  return items.map((item) => {
    let best: { node: number; slot: number; end: number } | null = null;
    for (const [node, speed] of nodeSpeeds.entries()) {
      const ready = loadedAt[node]!.get(item.model) ?? item.arrivalMs + coldLoadMs;
      const runMs = runMsAt(item, speed);
      for (const [slot, freeAt] of slotFreeAt[node]!.entries()) {
        const end = Math.max(item.arrivalMs, freeAt, ready) + runMs;
        if (best === null || end < best.end) best = { node, slot, end };
      }
    }
    const chosen = best!;
    slotFreeAt[chosen.node]![chosen.slot] = chosen.end;
    if (!loadedAt[chosen.node]!.has(item.model)) loadedAt[chosen.node]!.set(item.model, item.arrivalMs + coldLoadMs);
    return chosen.end - item.arrivalMs;
  });
}

/** Runs `items` at their arrival times; `start(item)` resolves when the item completes. Returns ms from arrival to completion. */
async function replay(items: WorkItem[], start: (item: WorkItem) => Promise<void>): Promise<number[]> {
  const began = performance.now();
  const done: Array<Promise<number>> = [];
  for (const item of items) {
    await sleep(began + item.arrivalMs - performance.now());
    const arrived = performance.now();
    done.push(start(item).then(() => performance.now() - arrived));
  }
  return Promise.all(done);
}

/**
 * A small dispatcher in front of the stand-ins, as a baseline: `round-robin` gives item i to
 * node i mod n (waiting there for a slot); `least-busy` gives each item, in arrival order, to
 * the node with the fewest generations in flight (ties in rotation), waiting when all are full.
 */
async function runDispatcher(policy: 'round-robin' | 'least-busy', items: WorkItem[]): Promise<number[]> {
  const standins: Standin[] = [];
  try {
    for (const speed of nodeSpeeds) standins.push(await startStandin(placementStandinOptions(speed)));
    await warmStandins(standins.map((standin) => standin.url));
    const inFlight = nodeSpeeds.map(() => 0);
    const waiting: Array<{ item: WorkItem; node: number | null; run: (node: number) => void }> = [];
    let rotation = 0;
    const generate = async (node: number, item: WorkItem): Promise<void> => {
      const response = await fetch(`${standins[node]!.url}/api/generate`, {
        method: 'POST',
        body: JSON.stringify({ model: item.model, prompt: item.prompt, stream: false, options: { num_predict: item.numPredict } }),
        signal: AbortSignal.timeout(120_000),
      });
      const text = await response.text();
      if (response.status !== 200) throw new Error(`${policy}: stand-in ${node} answered ${response.status}: ${text.slice(0, 200)}`);
    };
    const pump = () => {
      // FIFO per node for round-robin; one FIFO for least-busy. Bounded by the workload's size.
      for (let position = 0; position < waiting.length;) {
        const entry = waiting[position]!;
        let node: number | null = entry.node;
        if (node === null) {
          const free = inFlight.map((count, index) => ({ count, index })).filter(({ count }) => count < placementSlots);
          if (free.length === 0) break;
          const least = Math.min(...free.map(({ count }) => count));
          const tied = free.filter(({ count }) => count === least).map(({ index }) => index);
          node = tied.find((index) => index >= rotation % nodeSpeeds.length) ?? tied[0]!;
          rotation = node + 1;
        } else if (inFlight[node]! >= placementSlots) {
          position += 1;
          continue;
        }
        waiting.splice(position, 1);
        inFlight[node] = inFlight[node]! + 1;
        entry.run(node);
      }
    };
    return await replay(items, (item) => new Promise<void>((resolve, reject) => {
      waiting.push({
        item,
        node: policy === 'round-robin' ? item.index % nodeSpeeds.length : null,
        run: (node) => {
          generate(node, item).then(resolve, reject).finally(() => {
            inFlight[node] = inFlight[node]! - 1;
            pump();
          });
        },
      });
      pump();
    }));
  } finally {
    for (const standin of standins) await standin.close();
  }
}

/**
 * The workload through a fresh hivemesh cluster. `calibrate`: the daemons run with
 * --calibrate, and the run starts once every node's view shows the measured speed of
 * every warm model; without it, the first tasks of each model are placed before any node
 * has measured anything (as right after a first start).
 */
async function runHivemesh(items: WorkItem[], calibrate: boolean): Promise<{ completionMs: number[]; perNode: number[]; failed: number }> {
  const group = new ProcessGroup();
  try {
    const cluster = await startTaskCluster(group, nodeSpeeds.map((speed, index) => ({
      name: `pl-${index}-${speed}tps`, concurrency: placementSlots, standin: placementStandinOptions(speed), extraArgs: calibrate ? ['--calibrate'] : [],
    })), 90_000);
    await waitModelsGossiped(cluster, 30_000);
    await warmStandins(cluster.standins.map((standin) => standin.url));
    // Start only once every node's view shows the warm models: the leader places by what it knows.
    await waitUntil(`every node to see the warm models of every node${calibrate ? ', and their measured speeds' : ''}`, async () => {
      for (const observer of cluster.daemons) {
        const { body } = await observer.api<{ nodes: Array<{ id: string; models: { loaded: Array<{ name: string }>; tokensPerSecond: Record<string, number> } }> }>('/api/status/agents', { timeoutMs: 2_000 });
        for (const [index, subject] of cluster.daemons.entries()) {
          const models = body.nodes.find((node) => node.id === subject.nodeId)?.models;
          const loaded = models?.loaded.map((model) => model.name) ?? [];
          if (!warmAtStart[index]!.every((model) => loaded.includes(model))) return false;
          if (calibrate && !warmAtStart[index]!.every((model) => (models?.tokensPerSecond[model] ?? 0) > 0)) return false;
        }
      }
      return true;
    }, 30_000, 200);
    const { daemons } = cluster;
    const tokens = daemons.map((daemon) => daemon.adminToken);
    const runId = Date.now().toString(36);
    const counters = { retries: 0 };
    const submitted = new Map<string, { wallMs: number; item: WorkItem }>();
    await replay(items, async (item) => {
      const node = item.index % daemons.length;
      const wallMs = Date.now();
      const task = await submitTask(daemons[node]!, tokens[node]!, {
        model: item.model, prompt: item.prompt, options: { num_predict: item.numPredict }, idempotencyKey: `bench-pl-${runId}-${item.index}`,
      }, counters);
      submitted.set(task.id, { wallMs, item });
    });
    const finished = await waitFinished(daemons, [...submitted.keys()], 180_000);
    const nodeIndex = new Map(daemons.map((daemon, index) => [daemon.nodeId, index]));
    const perNode = nodeSpeeds.map(() => 0);
    const perNodeMs: number[][] = nodeSpeeds.map(() => []);
    const completionMs: number[] = [];
    let failed = 0;
    for (const [id, { wallMs }] of submitted) {
      const task = finished.get(id)!;
      if (task.status !== 'completed' || task.completedAt === null) {
        failed += 1;
        continue;
      }
      // Replicated timestamps are wall-clock ms of this same machine.
      completionMs.push(task.completedAt - wallMs);
      const index = nodeIndex.get(task.assignedNode ?? '');
      if (index !== undefined) {
        perNode[index] = perNode[index]! + 1;
        perNodeMs[index]!.push(task.completedAt - wallMs);
      }
    }
    if (process.env['HIVEMESH_BENCH_DETAIL'] === '1') {
      for (const [id, { wallMs, item }] of [...submitted].sort((a, b) => a[1].wallMs - b[1].wallMs)) {
        const task = finished.get(id)!;
        const node = nodeIndex.get(task.assignedNode ?? '');
        process.stderr.write(`  ${item.model.padEnd(12)} ${String(item.numPredict).padStart(4)} tok -> ${node === undefined ? '?' : nodeSpeeds[node]} tok/s: ${(task.completedAt ?? 0) - wallMs} ms (load ${Math.round(task.usage?.loadMs ?? 0)} ms, attempts ${task.attempt})\n`);
      }
    }
    // Detail for reading the placement (not a figure of the table): where tasks went and how they fared there.
    process.stderr.write(`bench tasks: hivemesh${calibrate ? ' --calibrate' : ''} placement per node (${nodeSpeeds.join('/')} tok/s): ${perNodeMs.map((times, index) => `${nodeSpeeds[index]} tok/s: ${times.length} tasks, mean ${mean(times).toFixed(0)} ms`).join('; ')}\n`);
    return { completionMs, perNode, failed };
  } finally {
    await group.stopAll();
  }
}

async function benchPlacement(rows: BenchRow[], taskCount: number): Promise<void> {
  const items = placementWorkload(taskCount, 300);
  const bound = items.map(lowerBoundMs);
  const hivemesh = await runHivemesh(items, false);
  const calibrated = await runHivemesh(items, true);
  const roundRobin = await runDispatcher('round-robin', items);
  const leastBusy = await runDispatcher('least-busy', items);
  const workload = `${taskCount} tasks, 3 models, ${nodeSpeeds.join('/')} tok/s x ${placementSlots} slots, cold load ${coldLoadMs / 1000} s`;
  const hivemeshMean = mean(hivemesh.completionMs);
  rows.push({
    section, name: `placement: mean submit-to-completed, hivemesh vs round-robin (${workload}; ${hivemesh.failed} failed; per node ${hivemesh.perNode.join('/')})`,
    value: hivemeshMean, unit: 'ms', baseline: { name: 'round-robin', value: mean(roundRobin) },
    goal: { text: `<= ${versusRoundRobinGoal} x round-robin`, met: hivemeshMean <= versusRoundRobinGoal * mean(roundRobin) },
  });
  rows.push({
    section, name: 'placement: mean submit-to-completed, hivemesh vs lower bound (fastest node, warm, no queueing)',
    value: hivemeshMean, unit: 'ms', baseline: { name: 'lower bound', value: mean(bound) },
    goal: { text: `<= ${versusLowerBoundGoal} x lower bound`, met: hivemeshMean <= versusLowerBoundGoal * mean(bound) },
  });
  rows.push({ section, name: 'placement: mean submit-to-completed, hivemesh vs least-busy', value: hivemeshMean, unit: 'ms', baseline: { name: 'least-busy', value: mean(leastBusy) } });
  const calibratedMean = mean(calibrated.completionMs);
  rows.push({
    section, name: `placement: mean, hivemesh --calibrate (speeds measured before the run; ${calibrated.failed} failed; per node ${calibrated.perNode.join('/')}) vs round-robin`,
    value: calibratedMean, unit: 'ms', baseline: { name: 'round-robin', value: mean(roundRobin) },
  });
  rows.push({ section, name: 'placement: mean, hivemesh --calibrate vs lower bound', value: calibratedMean, unit: 'ms', baseline: { name: 'lower bound', value: mean(bound) } });
  rows.push({ section, name: 'placement: mean, hivemesh --calibrate vs hivemesh without', value: calibratedMean, unit: 'ms', baseline: { name: 'without', value: hivemeshMean } });
  const clairvoyant = clairvoyantGreedyMs(items);
  rows.push({ section, name: 'placement: mean, hivemesh vs a clairvoyant greedy dispatcher (exact durations, no overhead; computed)', value: hivemeshMean, unit: 'ms', baseline: { name: 'clairvoyant', value: mean(clairvoyant) } });
  rows.push({ section, name: 'placement: mean, clairvoyant greedy vs lower bound (how far above the bound the workload forces placement)', value: mean(clairvoyant), unit: 'ms', baseline: { name: 'lower bound', value: mean(bound) } });
  const warmAware = mean(items.map(warmAwareBoundMs));
  rows.push({
    section, name: 'placement: a bound no scheduler can beat (each task alone on its best node, a cold model ready one load after the start at the soonest) vs 1.1x the lower bound',
    value: warmAware, unit: 'ms', baseline: { name: `${versusLowerBoundGoal} x lower bound`, value: versusLowerBoundGoal * mean(bound) },
  });
  rows.push({ section, name: 'placement: mean, hivemesh vs that bound', value: hivemeshMean, unit: 'ms', baseline: { name: 'bound with loads', value: warmAware } });
  rows.push({ section, name: 'placement: p95 submit-to-completed, hivemesh vs round-robin', value: percentile(hivemesh.completionMs, 95), unit: 'ms', baseline: { name: 'round-robin', value: percentile(roundRobin, 95) } });
  rows.push({ section, name: 'placement: p95 submit-to-completed, hivemesh vs least-busy', value: percentile(hivemesh.completionMs, 95), unit: 'ms', baseline: { name: 'least-busy', value: percentile(leastBusy, 95) } });
  rows.push({ section, name: 'placement: p95 submit-to-completed, hivemesh vs lower bound', value: percentile(hivemesh.completionMs, 95), unit: 'ms', baseline: { name: 'lower bound', value: percentile(bound, 95) } });
}

export async function run(rows: BenchRow[], quick: boolean): Promise<void> {
  setLogLevel('error');
  const group = new ProcessGroup();
  try {
    // The disk before any daemon runs: the baseline of the synced-write rows.
    const idleDisk = await syncedWriteLatency(5, () => sleep(1_500));
    const cluster = await startThroughputCluster(group);
    await benchThroughput(rows, cluster, quick ? 600 : 3_000, quick ? 600 : 3_000, idleDisk.latenciesMs);
    await benchStreaming(rows, cluster, quick ? 6 : 40);
  } finally {
    clientAgent.destroy();
    await group.stopAll();
  }
  await runPlacement(rows, quick);
}

/** Placement quality alone (`npm run bench -- --only placement`): the last part of `run`. */
export async function runPlacement(rows: BenchRow[], quick: boolean): Promise<void> {
  setLogLevel('error');
  await benchPlacement(rows, quick ? 24 : 60);
}
