// Preloading on real daemons over loopback (three, for a quorum of voters): a model warm only on a slow node, installed but
// cold on a fast one. The first tasks run on the slow node (sent cold to the fast one, each
// would wait for the load); once they have paid for a load there, the leader asks the fast
// node to load the model without a task, and the next tasks run there warm. No task waits
// for the load, and every task is generated exactly once (the load is no generation).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readStandinLog } from '../ollama-standin/events.ts';
import { ProcessGroup, waitUntil } from '../support/processes.ts';
import { promptSha, startTaskCluster, submit, tallyGenerations, waitFinished, waitModelsGossiped, type TaskCluster } from './tasks-helpers.ts';
import type { Task } from '../../protocol/tasks.ts';

const model = 'llama3.2:1b';
const coldLoadMs = 1_500;

describe('preloads on three daemons', () => {
  const group = new ProcessGroup();
  let cluster: TaskCluster;
  const tag = Date.now().toString(36);

  beforeAll(async () => {
    cluster = await startTaskCluster(group, [
      // --calibrate: each node measures its loaded model at once, so the leader knows from
      // the first task that the fast node would be ten times faster with the model there.
      { name: 'preload-slow', standin: { models: [model], tokensPerSecond: 40, coldLoadMs }, extraArgs: ['--calibrate'] },
      { name: 'preload-fast', standin: { models: [model, 'phi3:mini'], tokensPerSecond: 400, coldLoadMs }, extraArgs: ['--calibrate'] },
      // The third voter of the quorum, without the model.
      { name: 'preload-other', standin: { models: ['qwen2.5:7b'] } },
    ]);
    // What is in VRAM at the start: the model on the slow node, another one on the fast node.
    for (const [index, warm] of [[0, model], [1, 'phi3:mini']] as const) {
      const response = await fetch(`${cluster.standins[index]!.url}/api/generate`, { method: 'POST', body: JSON.stringify({ model: warm, prompt: '' }) });
      expect(response.status).toBe(200);
      await response.text();
    }
    await waitModelsGossiped(cluster);
    // The leader places by what it knows: start once every node sees both speeds measured.
    await waitUntil('every node to see the measured speeds of the warm models', async () => {
      for (const observer of cluster.daemons) {
        const { body } = await observer.api<{ nodes: Array<{ id: string; models: { tokensPerSecond: Record<string, number> } }> }>('/api/status/agents', { timeoutMs: 2_000 });
        const speed = (index: number, name: string) => body.nodes.find((node) => node.id === cluster.daemons[index]!.nodeId)?.models.tokensPerSecond[name] ?? 0;
        if (!(speed(0, model) > 0 && speed(1, 'phi3:mini') > 0)) return false;
      }
      return true;
    }, 20_000, 200);
  }, 60_000);

  afterAll(async () => {
    await group.stopAll();
  }, 30_000);

  it('loads the model on the faster node ahead of its tasks; no task waits for that load', async () => {
    const [slow, fast, other] = cluster.daemons as [typeof cluster.daemons[0], typeof cluster.daemons[0], typeof cluster.daemons[0]];
    const fastNode = fast.nodeId;
    // One task at a time (40 tokens: 1 s on the slow node), until tasks run on the fast node.
    const tasks: Task[] = [];
    for (let n = 0; n < 12; n += 1) {
      const task = await submit([slow, fast, other][n % 3]!, { model, prompt: `${tag} preload ${n}`, options: { num_predict: 40 } });
      const done = (await waitFinished(cluster.daemons, [task.id], 30_000)).get(task.id)!;
      expect(done.status).toBe('completed');
      tasks.push(done);
      if (tasks.length >= 2 && tasks.slice(-2).every((finished) => finished.assignedNode === fastNode)) break;
    }
    const onFast = tasks.filter((task) => task.assignedNode === fastNode);
    // The first tasks ran on the slow node, where the model was warm.
    expect(tasks[0]!.assignedNode).toBe(slow.nodeId);
    expect(onFast.length).toBeGreaterThanOrEqual(2);
    // The fast node's stand-in loaded the model once, for no generation: a preload.
    const loads = readStandinLog(cluster.logFiles[1]!).filter((event) => event.event === 'load' && event.model === model);
    expect(loads).toHaveLength(1);
    // No task paid for it: every one ran on a warm model.
    for (const task of tasks) expect(task.usage?.loadMs ?? 0).toBeLessThan(coldLoadMs / 2);
    // Each task generated once, and nothing else was generated on the model (calibration
    // measured it on the slow node only, where it was loaded from the start).
    const tally = tallyGenerations(cluster.logFiles);
    for (const task of tasks) expect(tally.get(promptSha(`${tag} preload ${tasks.indexOf(task)}`))).toMatchObject({ started: 1, finished: 1 });
  }, 90_000);
});
