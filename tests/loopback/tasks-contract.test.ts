// The task API and the CLI as ARCHITECTURE.md states them, on three real daemons (each with
// its own Ollama stand-in), asked on the leader and on followers: every bad input gets its
// 4xx with the field and the reason and changes nothing on any node; idempotency keys;
// list paging; pin and cancel; dependencies with their output filled in; tokens and roles
// (401, 403, revocation on every node); and the `hivemesh` commands a user types.
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpBodyBytesMax } from '../../protocol/limits.ts';
import type { Task, TaskList } from '../../protocol/tasks.ts';
import { standinText } from '../ollama-standin/catalog.ts';
import { absentModel, clusterStatus, type MeshDaemon } from '../support/cluster.ts';
import { cliEntry, ProcessGroup, waitUntil } from '../support/processes.ts';
import { sseData } from '../support/sse.ts';
import { promptSha, readEvents, retryable503, startTaskCluster, submit, tallyGenerations, waitFinished, waitModelsGossiped, type TaskCluster } from './tasks-helpers.ts';

interface Answer<T = unknown> { status: number; body: T; headers: Headers }
interface ErrorAnswer { error: { code: string; message: string; details?: unknown } }

/** One HTTP request with a raw body and any token (null: none). */
async function call<T = unknown>(daemon: MeshDaemon, method: string, path: string, init: { body?: string; token?: string | null; contentType?: string } = {}): Promise<Answer<T>> {
  const headers: Record<string, string> = {};
  const token = init.token === undefined ? daemon.adminToken : init.token;
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (init.body !== undefined) headers['content-type'] = init.contentType ?? 'application/json';
  for (let tries = 1; ; tries += 1) {
    const response = await fetch(daemon.apiUrl + path, { method, headers, body: init.body ?? null, signal: AbortSignal.timeout(10_000) });
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch { /* not JSON: the assertions say so */ }
    // A leader election on a loaded machine: the contract says retry; no test here expects a 503.
    if (tries < 5 && retryable503(response.status, body, false)) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      continue;
    }
    return { status: response.status, body: body as T, headers: response.headers };
  }
}

/** The contract's error shape, with a message that names what was wrong. */
function expectError(answer: Answer, status: number, mentions: RegExp): void {
  expect(answer.status, JSON.stringify(answer.body)).toBe(status);
  const body = answer.body as ErrorAnswer;
  expect(typeof body.error?.code).toBe('string');
  expect(body.error.message).toMatch(mentions);
  expect(body.error).toHaveProperty('details');
}

/** Every task id the node lists, walking all pages. */
async function allTaskIds(daemon: MeshDaemon, query = ''): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const path: string = `/api/tasks?limit=3${query}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
    const page: Answer<TaskList> = await call<TaskList>(daemon, 'GET', path);
    expect(page.status, JSON.stringify(page.body)).toBe(200);
    expect(page.body.tasks.length).toBeLessThanOrEqual(3);
    ids.push(...page.body.tasks.map((task) => task.id));
    cursor = page.body.nextCursor;
  } while (cursor !== null);
  return ids;
}

interface CliRun { code: number; stdout: string; stderr: string }

/** Runs `hivemesh ARGS` against a daemon, as a user would (HIVEMESH_URL / HIVEMESH_TOKEN). */
function hivemesh(daemon: MeshDaemon, args: string[], token: string = daemon.adminToken): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cliEntry, ...args], {
      env: { ...process.env, HIVEMESH_URL: daemon.apiUrl, HIVEMESH_TOKEN: token, NO_COLOR: '1' },
      timeout: 30_000,
    }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('the task API and the CLI, on the leader and on followers', () => {
  const group = new ProcessGroup();
  let cluster: TaskCluster;
  let leader: MeshDaemon;
  let followers: MeshDaemon[];
  const tag = Date.now().toString(36);

  beforeAll(async () => {
    cluster = await startTaskCluster(group, [
      { name: 'contract-a', standin: { models: ['llama3.2:1b'], tokensPerSecond: 400 } },
      { name: 'contract-b', standin: { models: ['llama3.2:1b', 'qwen2.5:7b'], tokensPerSecond: 300 } },
      { name: 'contract-c', standin: { models: ['phi3:mini'], tokensPerSecond: 200 } },
    ]);
    await waitModelsGossiped(cluster);
    const status = await clusterStatus(cluster.daemons[0]!);
    leader = cluster.daemons.find((daemon) => daemon.nodeId === status!.leaderId)!;
    followers = cluster.daemons.filter((daemon) => daemon !== leader);
  }, 60_000);

  afterAll(async () => {
    await group.stopAll();
  }, 30_000);

  it('every bad submit gets its 4xx naming the field and the reason, and changes nothing on any node', async () => {
    const existing = await submit(leader, { model: 'llama3.2:1b', prompt: `${tag} existing` });
    // A follower applies the write a moment after the leader answered.
    for (const daemon of followers) await waitUntil(`${daemon.spec.name} to list the task`, async () => (await allTaskIds(daemon)).includes(existing.id), 10_000, 50);
    const before = await Promise.all(cluster.daemons.map((daemon) => allTaskIds(daemon)));
    const ok = { model: 'llama3.2:1b', prompt: `${tag} fine` };
    const cases: Array<{ what: string; body: string; status: number; mentions: RegExp; contentType?: string }> = [
      { what: 'unknown field', body: JSON.stringify({ ...ok, colour: 'red' }), status: 400, mentions: /colour/ },
      { what: 'prompt of the wrong type', body: JSON.stringify({ ...ok, prompt: 42 }), status: 400, mentions: /prompt/ },
      { what: 'empty prompt', body: JSON.stringify({ ...ok, prompt: '' }), status: 400, mentions: /prompt/ },
      { what: 'blank prompt', body: JSON.stringify({ ...ok, prompt: '   ' }), status: 400, mentions: /prompt.*blank/ },
      { what: 'neither model nor capability', body: JSON.stringify({ prompt: 'x' }), status: 400, mentions: /model or capability/ },
      { what: 'neither prompt nor messages', body: JSON.stringify({ model: 'llama3.2:1b' }), status: 400, mentions: /prompt or messages/ },
      { what: 'prompt and messages together', body: JSON.stringify({ ...ok, messages: [{ role: 'user', content: 'hi' }] }), status: 400, mentions: /messages/ },
      { what: 'priority above 10', body: JSON.stringify({ ...ok, priority: 11 }), status: 400, mentions: /priority/ },
      { what: 'priority not an integer', body: JSON.stringify({ ...ok, priority: 2.5 }), status: 400, mentions: /priority/ },
      { what: 'maxAttempts 0', body: JSON.stringify({ ...ok, maxAttempts: 0 }), status: 400, mentions: /maxAttempts/ },
      { what: 'unknown dependency', body: JSON.stringify({ ...ok, dependsOn: ['t_doesnotexist'] }), status: 400, mentions: /t_doesnotexist/ },
      { what: 'placeholder not in dependsOn', body: JSON.stringify({ ...ok, prompt: `use {{tasks.${existing.id}.output}}` }), status: 400, mentions: /dependsOn/ },
      { what: 'not JSON', body: '{"model": "llama3.2:1b", "prompt": ', status: 400, mentions: /JSON|json|body/ },
      { what: 'a JSON array', body: '[1, 2]', status: 400, mentions: /object|body/ },
      { what: 'body over the limit', body: JSON.stringify({ ...ok, prompt: 'x'.repeat(httpBodyBytesMax + 10) }), status: 413, mentions: /too large|bytes|limit/i },
    ];
    for (const daemon of [leader, followers[0]!]) {
      for (const { what, body, status, mentions, contentType } of cases) {
        const answer = await call(daemon, 'POST', '/api/tasks', { body, ...(contentType === undefined ? {} : { contentType }) });
        try {
          expectError(answer, status, mentions);
        } catch (error) {
          throw new Error(`${what} on ${daemon.spec.name}: ${(error as Error).message}`, { cause: error });
        }
      }
      expectError(await call(daemon, 'POST', '/api/tasks', { body: JSON.stringify(ok), token: null }), 401, /token|Authorization/i);
      expectError(await call(daemon, 'POST', '/api/tasks', { body: JSON.stringify(ok), token: 'hm_notatokenofthisclusteratall' }), 401, /token/i);
      expectError(await call(daemon, 'GET', '/api/tasks/t_doesnotexist'), 404, /t_doesnotexist/);
      for (const query of ['limit=0', 'limit=abc', `limit=100000`, 'status=bogus', 'cursor=garbage']) {
        const answer = await call(daemon, 'GET', `/api/tasks?${query}`);
        try {
          expectError(answer, 400, /limit|status|cursor/);
        } catch (error) {
          throw new Error(`GET /api/tasks?${query} on ${daemon.spec.name}: ${(error as Error).message}`, { cause: error });
        }
      }
    }
    // A field with fixed choices says which.
    expectError(await call(leader, 'GET', '/api/tasks?status=bogus'), 400, /status: must be one of "queued", "assigned", "running", "completed", "failed", "cancelled"/);
    const after = await Promise.all(cluster.daemons.map((daemon) => allTaskIds(daemon)));
    expect(after).toEqual(before);
  }, 60_000);

  it('the same idempotencyKey and body return the same task on any node; another body is 409', async () => {
    const body = { model: 'llama3.2:1b', prompt: `${tag} once`, idempotencyKey: `${tag}-key` };
    const first = await call<Task>(followers[0]!, 'POST', '/api/tasks', { body: JSON.stringify(body) });
    expect(first.status).toBe(201);
    for (const daemon of cluster.daemons) {
      const again = await call<Task>(daemon, 'POST', '/api/tasks', { body: JSON.stringify(body) });
      expect(again.status).toBe(201);
      expect(again.body.id).toBe(first.body.id);
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      expectError(await call(daemon, 'POST', '/api/tasks', { body: JSON.stringify({ ...body, prompt: `${tag} other` }) }), 409, /idempotency key .* different body/);
    }
    await waitFinished(cluster.daemons, [first.body.id], 15_000);
    expect(tallyGenerations(cluster.logFiles).get(promptSha(body.prompt))?.finished).toBe(1);
    const ids = await allTaskIds(leader);
    expect(ids.filter((id) => id === first.body.id)).toHaveLength(1);
  }, 30_000);

  it('lists with status filter and cursor pages; a task no node can run waits with its reason; pin and cancel', async () => {
    const waiting: Task[] = [];
    // With keys, as a client should send them: a leader change on a loaded machine answers
    // 503 with the outcome unknown, and only a keyed write may be sent again.
    for (let n = 0; n < 7; n += 1) waiting.push(await submit(cluster.daemons[n % 3]!, { model: absentModel, prompt: `${tag} waits ${n}`, title: `waits ${n}`, idempotencyKey: `${tag}-waits-${n}` }));
    // The 201 itself says why, on the leader and on followers alike.
    for (const task of waiting) expect(task.waitingFor).toBe(`no node has model ${absentModel}`);
    for (const daemon of cluster.daemons) {
      await waitUntil(`${daemon.spec.name} to list every waiting task`, async () => {
        const queued = await allTaskIds(daemon, '&status=queued');
        return waiting.every((task) => queued.includes(task.id));
      }, 10_000, 50);
      const all = await allTaskIds(daemon);
      expect(new Set(all).size).toBe(all.length);
      const viewed = await call<Task>(daemon, 'GET', `/api/tasks/${waiting[0]!.id}`);
      expect(viewed.body.status).toBe('queued');
      expect(viewed.body.waitingFor).toMatch(new RegExp(absentModel.replace(/[.:]/g, '\\$&')));
    }
    const completed = await allTaskIds(leader, '&status=completed');
    expect(completed.some((id) => waiting.some((task) => task.id === id))).toBe(false);

    // Pin by node name on a follower, by node id on the leader; an unknown node is a 400.
    const target = cluster.daemons[2]!;
    const pinned = await call<Task>(followers[0]!, 'PUT', `/api/tasks/${waiting[0]!.id}/assign`, { body: JSON.stringify({ node: target.spec.name }) });
    expect(pinned.status, JSON.stringify(pinned.body)).toBe(200);
    expect(pinned.body.pinnedNode).toBe(target.nodeId);
    // The 200 says at once why the pinned task still waits, as a 201 does.
    expect(pinned.body.waitingFor).toBe(`pinned to node ${target.spec.name} (${target.nodeId}), which lacks model ${absentModel}`);
    const byId = await call<Task>(leader, 'PUT', `/api/tasks/${waiting[1]!.id}/assign`, { body: JSON.stringify({ node: target.nodeId }) });
    expect(byId.body.pinnedNode).toBe(target.nodeId);
    expect(byId.body.waitingFor).toBe(`pinned to node ${target.spec.name} (${target.nodeId}), which lacks model ${absentModel}`);
    expectError(await call(leader, 'PUT', `/api/tasks/${waiting[2]!.id}/assign`, { body: JSON.stringify({ node: 'no-such-node' }) }), 400, /no-such-node/);
    expectError(await call(leader, 'PUT', `/api/tasks/${waiting[2]!.id}/assign`, { body: JSON.stringify({ host: 'x' }) }), 400, /node|host/);

    // Cancel on any node; a second cancel, or a pin of a cancelled task, is a conflict.
    for (const [position, task] of waiting.entries()) {
      const cancelled = await call<Task>(cluster.daemons[position % 3]!, 'DELETE', `/api/tasks/${task.id}`);
      expect(cancelled.status).toBe(200);
      expect(cancelled.body.status).toBe('cancelled');
    }
    expectError(await call(followers[1]!, 'DELETE', `/api/tasks/${waiting[0]!.id}`), 409, /cancelled|finished/);
    expectError(await call(leader, 'PUT', `/api/tasks/${waiting[3]!.id}/assign`, { body: JSON.stringify({ node: target.spec.name }) }), 409, /cancelled|finished|queued/);
    expectError(await call(leader, 'DELETE', '/api/tasks/t_doesnotexist'), 404, /t_doesnotexist/);
  }, 45_000);

  it('a task acknowledged by one node is known at once on the others (get, events, pin, cancel)', async () => {
    for (let n = 0; n < 10; n += 1) {
      const task = await submit(leader, { model: absentModel, prompt: `${tag} known at once ${n}` });
      const got = await call<Task>(followers[0]!, 'GET', `/api/tasks/${task.id}`);
      expect(got.status, JSON.stringify(got.body)).toBe(200);
      const other = await submit(followers[0]!, { model: absentModel, prompt: `${tag} known at once too ${n}` });
      const pinned = await call<Task>(followers[1]!, 'PUT', `/api/tasks/${other.id}/assign`, { body: JSON.stringify({ node: leader.nodeId }) });
      expect(pinned.status, JSON.stringify(pinned.body)).toBe(200);
      const cancelled = await call<Task>(followers[1]!, 'DELETE', `/api/tasks/${task.id}`);
      expect(cancelled.status, JSON.stringify(cancelled.body)).toBe(200);
      expect((await call(followers[0]!, 'DELETE', `/api/tasks/${other.id}`)).status).toBe(200);
    }
    const watched = await submit(followers[1]!, { model: 'llama3.2:1b', prompt: `${tag} watched at once`, options: { num_predict: 4 } });
    const events = await readEvents(leader, watched.id, 15_000);
    expect(events.at(-1)).toMatchObject({ type: 'final', task: { status: 'completed' } });
  }, 45_000);

  it('fills {{tasks.ID.output}} from a finished dependency before running the dependent', async () => {
    const first = await submit(followers[1]!, { model: 'llama3.2:1b', prompt: `${tag} first`, options: { num_predict: 6 } });
    const second = await submit(leader, { model: 'qwen2.5:7b', prompt: `${tag} then: {{tasks.${first.id}.output}}`, dependsOn: [first.id], options: { num_predict: 5 } });
    const done = await waitFinished(cluster.daemons, [first.id, second.id], 20_000);
    const firstOutput = standinText('llama3.2:1b', `${tag} first`, 6);
    expect(done.get(first.id)!.output).toBe(firstOutput);
    const filled = `${tag} then: ${firstOutput}`;
    expect(done.get(second.id)!.output).toBe(standinText('qwen2.5:7b', filled, 5));
    expect(tallyGenerations(cluster.logFiles).get(promptSha(filled))?.finished).toBe(1);
  }, 30_000);

  it('a token created through one node works at once on every other node', async () => {
    // Before: the other nodes answered 401 until they had applied the token (21 of 174 tries
    // in an audit); now a node that does not know a token catches up with the leader first.
    const refused: string[] = [];
    for (let round = 0; round < 15; round += 1) {
      const created = await call<{ token: string }>(followers[0]!, 'POST', '/api/tokens', { body: JSON.stringify({ role: 'viewer', name: `${tag}-fresh-${round}` }) });
      expect(created.status).toBe(201);
      const others = cluster.daemons.filter((daemon) => daemon !== followers[0]);
      const answers = await Promise.all(others.map((daemon) => call(daemon, 'GET', '/api/status/cluster', { token: created.body.token })));
      answers.forEach((answer, position) => { if (answer.status !== 200) refused.push(`${others[position]!.spec.name}: ${answer.status}`); });
    }
    expect(refused).toEqual([]);
    // A token nobody created is still refused, after the look at the leader.
    expectError(await call(leader, 'GET', '/api/status/cluster', { token: 'hm_not-a-real-token' }), 401, /not valid on this cluster/);
  }, 30_000);

  it('roles: a viewer reads but cannot write, an operator cannot manage tokens, a revoked token is refused on every node', async () => {
    const create = async (role: string, name: string) => {
      const answer = await call<{ id: string; token: string; role: string }>(followers[0]!, 'POST', '/api/tokens', { body: JSON.stringify({ role, name }) });
      expect(answer.status, JSON.stringify(answer.body)).toBe(201);
      return answer.body;
    };
    const viewer = await create('viewer', `${tag}-viewer`);
    const operator = await create('operator', `${tag}-operator`);
    expectError(await call(leader, 'POST', '/api/tokens', { body: JSON.stringify({ role: 'root', name: 'x' }) }), 400, /role/);
    for (const daemon of cluster.daemons) {
      await waitUntil(`${daemon.spec.name} to know the new tokens`, async () =>
        (await call(daemon, 'GET', '/api/tasks?limit=1', { token: operator.token })).status === 200, 10_000, 50);
    }
    const tasksBefore = await allTaskIds(leader);
    const tokensBefore = (await call<{ tokens: unknown[] }>(leader, 'GET', '/api/tokens')).body.tokens.length;
    const someTask = tasksBefore[0]!;
    for (const daemon of cluster.daemons) {
      expect((await call(daemon, 'GET', '/api/tasks?limit=1', { token: viewer.token })).status).toBe(200);
      expect((await call(daemon, 'GET', '/api/status/cluster', { token: viewer.token })).status).toBe(200);
      expectError(await call(daemon, 'POST', '/api/tasks', { body: JSON.stringify({ model: absentModel, prompt: 'no' }), token: viewer.token }), 403, /viewer|role|not allowed|permission/i);
      expectError(await call(daemon, 'DELETE', `/api/tasks/${someTask}`, { token: viewer.token }), 403, /viewer|role|not allowed|permission/i);
      expectError(await call(daemon, 'POST', '/api/tokens', { body: JSON.stringify({ role: 'admin', name: 'escalate' }), token: operator.token }), 403, /operator|role|not allowed|permission/i);
      expectError(await call(daemon, 'GET', '/api/tokens', { token: viewer.token }), 403, /viewer|role|not allowed|permission/i);
    }
    expect(await allTaskIds(leader)).toEqual(tasksBefore);
    expect((await call<{ tokens: unknown[] }>(leader, 'GET', '/api/tokens')).body.tokens.length).toBe(tokensBefore);
    const byOperator = await call<Task>(followers[1]!, 'POST', '/api/tasks', { body: JSON.stringify({ model: 'llama3.2:1b', prompt: `${tag} by operator` }), token: operator.token });
    expect(byOperator.status).toBe(201);

    // A cluster event stream opened with the token before it is revoked.
    const streamResponse = await fetch(`${followers[1]!.apiUrl}/api/events`, { headers: { authorization: `Bearer ${operator.token}` }, signal: AbortSignal.timeout(20_000) });
    expect(streamResponse.status).toBe(200);
    const streamed: Array<{ type?: string; error?: { code: string; message: string } }> = [];
    const streamEnded = (async () => {
      for await (const event of sseData<{ type?: string; error?: { code: string; message: string } }>(streamResponse)) streamed.push(event);
    })();

    const revoked = await call(leader, 'DELETE', `/api/tokens/${operator.id}`);
    expect(revoked.status).toBe(200);
    // The open stream ends at its next event once the revocation is known there, with the reason.
    await waitUntil('the stream opened with the revoked token to end', async () => {
      await call(leader, 'POST', '/api/tasks', { body: JSON.stringify({ model: absentModel, prompt: `${tag} after revocation ${Date.now()}` }) });
      return Promise.race([streamEnded.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 500))]);
    }, 15_000, 0);
    expect(streamed.at(-1)?.error).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/revoked/) });
    for (const daemon of cluster.daemons) {
      await waitUntil(`${daemon.spec.name} to refuse the revoked token`, async () =>
        (await call(daemon, 'GET', '/api/tasks?limit=1', { token: operator.token })).status === 401, 10_000, 50);
      expectError(await call(daemon, 'POST', '/api/tasks', { body: JSON.stringify({ model: 'llama3.2:1b', prompt: 'revoked' }), token: operator.token }), 401, /token/i);
    }
    expectError(await call(leader, 'DELETE', `/api/tokens/${operator.id}`), 409, /revoked/);
  }, 45_000);

  it('the CLI on every node: submit --wait and --follow, tasks, task, cancel, tokens, and clear errors', async () => {
    for (const [index, daemon] of cluster.daemons.entries()) {
      const prompt = `${tag} cli wait ${index}`;
      const waited = await hivemesh(daemon, ['submit', '--model', 'llama3.2:1b', '--wait', prompt]);
      expect(waited.code, waited.stderr).toBe(0);
      expect(waited.stdout.trimEnd()).toBe(standinText('llama3.2:1b', prompt, 24).trimEnd());

      const followPrompt = `${tag} cli follow ${index}`;
      const followed = await hivemesh(daemon, ['submit', '--model', 'phi3:mini', '--follow', followPrompt]);
      expect(followed.code, followed.stderr).toBe(0);
      expect(followed.stdout.trimEnd()).toBe(standinText('phi3:mini', followPrompt, 24).trimEnd());
      expect(followed.stderr).toMatch(/\[completed/);
      const followedJson = await hivemesh(daemon, ['submit', '--model', 'phi3:mini', '--follow', '--json', `${followPrompt} json`]);
      expect(followedJson.code, followedJson.stderr).toBe(0);
      expect((JSON.parse(followedJson.stdout) as Task).output).toBe(standinText('phi3:mini', `${followPrompt} json`, 24));

      const queued = await hivemesh(daemon, ['submit', '--model', absentModel, `${tag} cli never ${index}`]);
      expect(queued.code, queued.stderr).toBe(0);
      expect(queued.stderr).toMatch(new RegExp(`warning: no live node has model "${absentModel.replace(/[.:]/g, '\\$&')}"`));
      const id = queued.stdout.trim();
      expect(id).toMatch(/^t_/);
      const shown = await hivemesh(daemon, ['task', id]);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toContain('queued');
      const listed = await hivemesh(daemon, ['tasks', '--status', 'queued', '--json']);
      expect(listed.code, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as TaskList).tasks.map((task) => task.id)).toContain(id);
      const cancelled = await hivemesh(daemon, ['cancel', id]);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      const after = await hivemesh(daemon, ['task', id, '--json']);
      expect((JSON.parse(after.stdout) as Task).status).toBe('cancelled');
    }
    // Each --wait and --follow prompt ran exactly once.
    const tally = tallyGenerations(cluster.logFiles);
    for (let index = 0; index < 3; index += 1) {
      expect(tally.get(promptSha(`${tag} cli wait ${index}`))?.finished).toBe(1);
      expect(tally.get(promptSha(`${tag} cli follow ${index}`))?.finished).toBe(1);
    }

    const created = await hivemesh(followers[0]!, ['token', 'create', '--role', 'viewer', '--name', `${tag}-cli`, '--json']);
    expect(created.code, created.stderr).toBe(0);
    const token = JSON.parse(created.stdout) as { id: string; token: string };
    await waitUntil('the CLI token to work on the leader', async () => (await hivemesh(leader, ['tasks', '--json'], token.token)).code === 0, 10_000, 100);
    const refused = await hivemesh(leader, ['submit', '--model', 'llama3.2:1b', 'as a viewer'], token.token);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/viewer|role|not allowed|permission/i);
    const tokenList = await hivemesh(leader, ['token', 'list']);
    expect(tokenList.stdout).toContain(`${tag}-cli`);
    expect((await hivemesh(leader, ['token', 'revoke', token.id])).code).toBe(0);

    // Errors: non-zero exit, a sentence on stderr, no stack trace.
    for (const [args, mentions] of [
      [['task', 't_doesnotexist'], /t_doesnotexist/],
      [['cancel', 't_doesnotexist'], /t_doesnotexist/],
      [['submit', '--wait', 'no model given'], /--model/],
      [['submit', '--model', 'llama3.2:1b', '--priority', 'high', 'x'], /--priority/],
      [['tasks', '--status', 'bogus'], /status/],
    ] as Array<[string[], RegExp]>) {
      const run = await hivemesh(followers[1]!, args);
      expect(run.code, `${args.join(' ')}: ${run.stdout}`).not.toBe(0);
      expect(run.stderr, args.join(' ')).toMatch(mentions);
      expect(run.stderr, args.join(' ')).not.toMatch(/\n\s+at .+:\d+:\d+/);
    }
    const badToken = await hivemesh(leader, ['tasks'], 'hm_notatokenofthisclusteratall');
    expect(badToken.code).not.toBe(0);
    expect(badToken.stderr).toMatch(/token/i);
  }, 90_000);
});
