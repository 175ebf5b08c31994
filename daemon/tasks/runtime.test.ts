// The task runtime on one node against the Ollama stand-in: scheduling, execution with
// streaming, usage and measured speed, cancel aborting the generation, retryable and
// permanent failures, timeouts, fencing, the concurrency bound and restart reconciliation.
import { afterEach, describe, expect, it } from 'vitest';
import { renderChatPrompt, standinText } from '../../tests/ollama-standin/catalog.ts';
import type { TaskEvent, TaskOutputEvent } from '../../protocol/tasks.ts';
import { encodeCommand } from '../../scheduler/state/commands.ts';
import { ReplicatedState } from '../../scheduler/state/state.ts';
import { startHarness, waitFor, type Harness } from './test-harness.ts';
import { namedLeaderStands } from './runtime.ts';
import type { Heartbeat } from '../../protocol/heartbeat.ts';

const harnesses: Harness[] = [];

async function harness(options: Parameters<typeof startHarness>[0] = {}): Promise<Harness> {
  const started = await startHarness(options);
  harnesses.push(started);
  return started;
}

afterEach(async () => {
  await Promise.all(harnesses.splice(0).map((started) => started.close()));
});

async function collect(stream: AsyncIterable<TaskEvent>): Promise<TaskEvent[]> {
  const events: TaskEvent[] = [];
  for await (const event of stream) events.push(event);
  return events;
}

describe('task runtime on one node', () => {
  it('runs a prompt task on Ollama, streams its output in sequence and records usage and speed', async () => {
    const h = await harness();
    // 300 tokens at 2,000 tokens/s: long enough (over 100 ms) for task.start to be reported.
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'Say something about meshes.', options: { num_predict: 300 } });
    const events = await collect(h.service.events(task.id, AbortSignal.timeout(10_000)));
    const final = events.at(-1);
    expect(final?.type).toBe('final');
    const done = (final as Extract<TaskEvent, { type: 'final' }>).task;
    expect(done.status).toBe('completed');
    expect(done.assignedNode).toBe(h.nodeId);
    expect(done.output).toBe(standinText('llama3.2:1b', 'Say something about meshes.', 300));
    expect(done.usage?.completionTokens).toBe(300);
    expect(done.usage?.promptTokens).toBeGreaterThan(0);
    expect(done.usage?.tokensPerSecond).toBeGreaterThan(0);
    expect(done.usage?.totalMs).toBeGreaterThan(0);
    const statuses = events.filter((event) => event.type === 'status').map((event) => (event as { status: string }).status);
    expect(statuses).toEqual(expect.arrayContaining(['queued', 'assigned', 'running', 'completed']));
    const output = events.filter((event): event is TaskOutputEvent => event.type === 'output');
    expect(output.map((event) => event.sequence)).toEqual(output.map((_, position) => position));
    expect(output.map((event) => event.text).join('')).toBe(done.output);
    expect(h.probe.snapshot().ollama.tokensPerSecond['llama3.2:1b']).toBeGreaterThan(0);
    expect(h.proposed).toEqual(expect.arrayContaining(['task.submit', 'task.assign', 'task.start', 'task.complete']));
    expect(h.standin.generations()).toHaveLength(1);
  });

  it('runs a task whose model is named in another case, as Ollama accepts it, under the name this Ollama lists', async () => {
    const h = await harness();
    // The stand-in, like Ollama before 0.4, finds only the listed spelling.
    const { task } = await h.service.submit({ model: 'Llama3.2:1B', prompt: 'case' });
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('completed');
    expect(done.output).toBe(standinText('llama3.2:1b', 'case', 24));
    expect(h.standin.generations().map((generation) => generation.model)).toEqual(['llama3.2:1b']);
    // Its speed is measured under the listed name, where the scheduler looks it up.
    expect(Object.keys(h.probe.snapshot().ollama.tokensPerSecond)).toEqual(['llama3.2:1b']);
  });

  it('completes a short generation without a task.start entry', async () => {
    const h = await harness({ tuning: { startReportDelayMs: 5_000 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'quick' });
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('completed');
    expect(done.startedAt).toBe(done.completedAt);
    expect(h.proposed).not.toContain('task.start');
  });

  it('runs messages with the agent system prompt through chat for a capability task', async () => {
    const agents = [{ id: 'poet', model: 'qwen2.5:7b', capabilities: [{ name: 'poetry', proficiency: 0.9 }], system: 'You write haiku.' }];
    const h = await harness({ agents });
    await waitFor('the agent to be offered', () => h.probe.snapshot().agents.some((agent) => agent.id === 'poet'));
    const messages = [{ role: 'user' as const, content: 'A haiku on consensus' }];
    const { task } = await h.service.submit({ capability: 'poetry', messages });
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('completed');
    expect(done.attempts[0]?.agentId).toBe('poet');
    expect(done.attempts[0]?.model).toBe('qwen2.5:7b');
    const generation = h.standin.generations()[0]!;
    expect(generation.endpoint).toBe('chat');
    const promptText = renderChatPrompt([{ role: 'system', content: 'You write haiku.' }, ...messages]);
    expect(generation.promptText).toBe(promptText);
    expect(done.output).toBe(standinText('qwen2.5:7b', promptText, 24));
  });

  /** From the first assignment on, the node learns of `ahead` more committed entries than it has applied. */
  function lagAfterAssignment(h: Harness, ahead: number): void {
    const onApplied = h.runtime.onApplied.bind(h.runtime);
    let lagging = false;
    h.runtime.onApplied = (applied) => {
      if (!lagging && applied.some(({ result }) => result?.ok === true && result.events.some((event) => event.status === 'assigned'))) {
        lagging = true;
        h.raft.commit = h.state().lastApplied + ahead;
      }
      onApplied(applied);
    };
  }

  it('starts an assignment applied while slightly behind once the lag is applied, not at the next reconciliation', async () => {
    const h = await harness({ tuning: { reconcileEveryMs: 60_000 } });
    lagAfterAssignment(h, 1);
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'deferred start' });
    await waitFor('the assignment', () => h.service.get(task.id).status === 'assigned');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(h.standin.generations()).toHaveLength(0);
    await h.service.submit({ model: 'hm-absent-model:1b', prompt: 'the entry that catches the node up' });
    const done = await h.service.waitFinished(task.id, 5_000);
    expect(done.status).toBe('completed');
    expect(h.standin.generations()).toHaveLength(1);
  });

  it('does not start a deferred assignment that was cancelled in the meantime', async () => {
    const h = await harness({ tuning: { reconcileEveryMs: 60_000 } });
    lagAfterAssignment(h, 2);
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'deferred, then cancelled' });
    await waitFor('the assignment', () => h.service.get(task.id).status === 'assigned');
    await h.service.cancel(task.id, 'changed my mind');
    await h.service.submit({ model: 'hm-absent-model:1b', prompt: 'the entry that catches the node up' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(h.service.get(task.id).status).toBe('cancelled');
    expect(h.standin.generations()).toHaveLength(0);
  });

  it('fills {{tasks.ID.output}} from a completed dependency', async () => {
    const h = await harness();
    const first = (await h.service.submit({ model: 'llama3.2:1b', prompt: 'first' })).task;
    const second = (await h.service.submit({ model: 'llama3.2:1b', prompt: `Summarize: {{tasks.${first.id}.output}}`, dependsOn: [first.id] })).task;
    const done = await h.service.waitFinished(second.id, 10_000);
    const firstOutput = h.service.get(first.id).output!;
    expect(done.status).toBe('completed');
    expect(h.standin.generations()[1]?.promptText).toBe(`Summarize: ${firstOutput}`);
  });

  it('aborts the generation when the task is cancelled mid-stream', async () => {
    const h = await harness({ standin: { tokensPerSecond: 20 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'a long story', options: { num_predict: 400 } });
    await waitFor('tokens to stream', () => (h.standin.generations()[0]?.tokens ?? 0) >= 3);
    await h.service.cancel(task.id);
    await waitFor('the stand-in to see the abort', () => h.standin.generations()[0]?.outcome === 'aborted');
    expect(h.service.get(task.id).status).toBe('cancelled');
    expect(h.standin.generations()[0]!.tokens).toBeLessThan(400);
    // What was generated until the abort becomes the cancelled task's output: the start of
    // the text the stand-in would have generated for the prompt.
    const partial = await waitFor('the partial output', () => h.service.get(task.id).output);
    const generation = h.standin.generations()[0]!;
    // (Tokens the stand-in sent as the connection closed may not have arrived.)
    expect(standinText('llama3.2:1b', generation.promptText, generation.tokens).startsWith(partial)).toBe(true);
    expect(partial.startsWith(standinText('llama3.2:1b', generation.promptText, 3))).toBe(true);
    expect(h.service.get(task.id)).toMatchObject({ status: 'cancelled', usage: null, outputTruncated: false });
    // Nothing reports the aborted attempt as completed afterwards.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(h.proposed).not.toContain('task.complete');
    expect(h.proposed.filter((type) => type === 'task.output')).toHaveLength(1);
  });

  it('retries an attempt that failed with a server error, on a fresh attempt', async () => {
    const h = await harness();
    h.standin.failNext(1, { status: 500 });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'flaky' });
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('completed');
    expect(done.attempts.map((attempt) => attempt.status)).toEqual(['failed', 'completed']);
    expect(done.attempts[0]?.error).toMatch(/HTTP 500/);
  });

  it('fails at once, without retry, when the model is gone from Ollama', async () => {
    const h = await harness();
    const { task } = await h.service.submit({ model: 'qwen2.5:7b', prompt: 'anyone there?', maxAttempts: 3 });
    // The probe saw the model; it disappears before the generation runs.
    h.standin.setModels(['llama3.2:1b']);
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('failed');
    expect(done.attempts).toHaveLength(1);
    expect(done.error).toMatch(/not found/);
    expect(done.error).toMatch(/ollama pull/);
  });

  it('honours timeoutMs: the generation is aborted and reported as a retryable failure', async () => {
    const h = await harness({ standin: { tokensPerSecond: 10 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'slow', timeoutMs: 1_000, maxAttempts: 1, options: { num_predict: 500 } });
    const done = await h.service.waitFinished(task.id, 10_000);
    expect(done.status).toBe('failed');
    expect(done.error).toMatch(/gave up after 1 of 1 attempts.*timeoutMs of 1000 ms/);
    await waitFor('the stand-in to see the abort', () => h.standin.generations()[0]?.outcome === 'aborted');
    // The task failed for good: what it generated in its second is its output.
    const partial = await waitFor('the partial output', () => h.service.get(task.id).output);
    const generation = h.standin.generations()[0]!;
    expect(standinText('llama3.2:1b', generation.promptText, generation.tokens).startsWith(partial)).toBe(true);
    expect(partial.length).toBeGreaterThan(0);
    expect(h.service.get(task.id)).toMatchObject({ status: 'failed', usage: null });
  });

  it('never runs more generations at once than its concurrency', async () => {
    const h = await harness({ concurrency: 2, standin: { tokensPerSecond: 200, maxConcurrency: 8 } });
    const ids: string[] = [];
    for (let n = 0; n < 6; n += 1) ids.push((await h.service.submit({ model: 'llama3.2:1b', prompt: `job ${n}`, options: { num_predict: 20 } })).task.id);
    let peak = 0;
    await waitFor('all tasks to complete', () => {
      peak = Math.max(peak, h.standin.generations().filter((generation) => generation.outcome === 'running').length);
      return ids.every((id) => h.service.get(id).status === 'completed');
    }, 15_000);
    expect(peak).toBeGreaterThanOrEqual(1);
    expect(peak).toBeLessThanOrEqual(2);
    expect(h.standin.generations()).toHaveLength(6);
    expect(h.runtime.load()).toEqual({ running: 0, queued: 0 });
  });

  it('fences itself off without a leader: aborts the generation, then reports it failed once a leader is back', async () => {
    const h = await harness({ standin: { tokensPerSecond: 20 }, tuning: { fenceAfterMs: 200 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'partitioned', options: { num_predict: 400 } });
    await waitFor('tokens to stream', () => (h.standin.generations()[0]?.tokens ?? 0) >= 2);
    h.raft.leader = null;
    await waitFor('the generation to be aborted', () => h.standin.generations()[0]?.outcome === 'aborted', 3_000);
    expect(h.service.get(task.id).status).toBe('running');
    h.raft.leader = h.nodeId;
    await waitFor('the attempt to be failed back into the queue', () => h.service.get(task.id).attempts[0]?.status === 'failed', 3_000);
    expect(h.service.get(task.id).attempts[0]?.error).toMatch(/lost contact with the leader/);
    expect(h.service.get(task.id).status).not.toBe('failed');
  });

  it('fences itself off when the leader its raft status names is alive but says it stepped down (a learner cut off with the old leader)', async () => {
    const h = await harness({ standin: { tokensPerSecond: 20 }, tuning: { fenceAfterMs: 200 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'cut off with the old leader', options: { num_predict: 400 } });
    await waitFor('tokens to stream', () => (h.standin.generations()[0]?.tokens ?? 0) >= 2);
    // This node is a learner: raft keeps naming the old leader, which never campaigns again
    // here. The old leader is still heard (same side of the cut) and gossips that it stepped down.
    const heartbeat = (role: string, term: number) => ({ raft: { role, term, leaderId: null, commitIndex: 0, clusterEmpty: false } }) as unknown as Heartbeat;
    h.members.push({ nodeId: 'node-old', state: 'alive', self: false, lastSeenMs: Date.now(), heartbeat: heartbeat('follower', 1), clockOffsetMs: 0 });
    Object.assign(h.raft, { role: 'follower', term: 1, leader: 'node-old' });
    await waitFor('the generation to be aborted', () => h.standin.generations()[0]?.outcome === 'aborted', 3_000);
    // This harness's log commits whatever the raft status says, so the aborted attempt's
    // report may already be applied (requeued) on a loaded machine: never completed.
    expect(['running', 'queued']).toContain(h.service.get(task.id).status);
  });

  it('namedLeaderStands: a leader stands while alive and not contradicted by its own heartbeat of our term or later', () => {
    const member = (state: 'alive' | 'suspect' | 'dead', raft: { role: string; term: number } | null) => ({
      state, heartbeat: raft === null ? null : ({ raft: { ...raft, leaderId: null, commitIndex: 0, clusterEmpty: false } } as unknown as Heartbeat),
    });
    expect(namedLeaderStands(undefined, 3)).toBe(true);
    expect(namedLeaderStands(member('alive', null), 3)).toBe(true);
    expect(namedLeaderStands(member('alive', { role: 'leader', term: 3 }), 3)).toBe(true);
    // Its last heartbeat predates its election: no evidence against it.
    expect(namedLeaderStands(member('alive', { role: 'candidate', term: 2 }), 3)).toBe(true);
    expect(namedLeaderStands(member('alive', { role: 'follower', term: 3 }), 3)).toBe(false);
    expect(namedLeaderStands(member('alive', { role: 'pre-candidate', term: 3 }), 3)).toBe(false);
    expect(namedLeaderStands(member('alive', { role: 'follower', term: 4 }), 3)).toBe(false);
    expect(namedLeaderStands(member('suspect', { role: 'leader', term: 3 }), 3)).toBe(false);
  });

  it('says why a queued task waits', async () => {
    const h = await harness();
    const { task } = await h.service.submit({ model: 'mistral:7b', prompt: 'nobody has me' });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(h.service.get(task.id).status).toBe('queued');
    expect(h.runtime.waitingFor(task.id)).toBe('no node has model mistral:7b');
    const done = (await h.service.submit({ model: 'llama3.2:1b', prompt: 'run me' })).task;
    expect(h.runtime.waitingFor(done.id)).toBeNull();
  });

  it('stops a generation whose attempt the state no longer shows live here when the change arrived without an applied event (a snapshot install)', async () => {
    // 500 tokens at 20 tokens/s: 25 s, far longer than the test waits.
    const h = await harness({ standin: { tokensPerSecond: 20 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'frozen, then caught up from a snapshot', options: { num_predict: 500 } });
    await waitFor('the generation to run, its start committed', () => h.standin.generations()[0]?.outcome === 'running' && h.service.get(task.id).status === 'running', 3_000);
    h.runtime.scheduler.stop();
    // While this node was frozen, the leader requeued the attempt (declared dead) and compacted
    // its log: this node catches up by installing a snapshot, so the state moves on without
    // onApplied hearing of the requeue.
    const state = h.state();
    state.apply(state.lastApplied + 1, encodeCommand({ type: 'task.requeue', id: task.id, attempt: 1, reason: 'node node-a stopped answering (declared dead) during attempt 1', at: Date.now() }));
    await waitFor('the stale generation to be aborted', () => h.standin.generations()[0]?.outcome === 'aborted', 3_000);
    expect(h.service.get(task.id).status).toBe('queued');
    expect(h.proposed).not.toContain('task.complete');
  });

  it('stops such a generation at once when told of the transitions the installed snapshot carried', async () => {
    // The reconciliation is put off, so only onRestored can stop it.
    const h = await harness({ standin: { tokensPerSecond: 20 }, tuning: { reconcileEveryMs: 600_000 } });
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'caught up from a snapshot, told of it', options: { num_predict: 500 } });
    await waitFor('the generation to run, its start committed', () => h.standin.generations()[0]?.outcome === 'running' && h.service.get(task.id).status === 'running', 3_000);
    h.runtime.scheduler.stop();
    const state = h.state();
    const before = ReplicatedState.restore(state.snapshot());
    state.apply(state.lastApplied + 1, encodeCommand({ type: 'task.requeue', id: task.id, attempt: 1, reason: 'node node-a stopped answering (declared dead) during attempt 1', at: Date.now() }));
    h.runtime.onRestored(before.transitionsTo(state, Date.now()));
    await waitFor('the stale generation to be aborted', () => h.standin.generations()[0]?.outcome === 'aborted', 3_000);
    expect(h.proposed).not.toContain('task.complete');
  });

  it('fails an attempt the log shows running here that this process does not run (a restart)', async () => {
    const h = await harness();
    h.runtime.scheduler.stop();
    const { task } = await h.service.submit({ model: 'llama3.2:1b', prompt: 'before the restart' });
    // A previous process of this node was assigned and started the attempt, then died.
    const propose = async (command: Parameters<typeof encodeCommand>[0]) => {
      const state = h.state();
      state.apply(state.lastApplied + 1, encodeCommand(command));
    };
    await propose({ type: 'task.assign', id: task.id, node: h.nodeId, attempt: 1, term: 1, model: 'llama3.2:1b', agentId: null, at: Date.now() });
    await propose({ type: 'task.start', id: task.id, attempt: 1, node: h.nodeId, at: Date.now() });
    await waitFor('reconciliation to fail the lost attempt', () => h.service.get(task.id).attempts[0]?.status === 'failed', 3_000);
    expect(h.service.get(task.id).attempts[0]?.error).toMatch(/restarted during attempt 1/);
    expect(h.standin.generations()).toHaveLength(0);
  });
});
