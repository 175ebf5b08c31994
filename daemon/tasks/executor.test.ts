// The executor's output as a watcher gets it over HTTP: a task whose Ollama chunks split
// surrogate pairs (the stand-in streams JSON output in 4-unit pieces) runs through the
// real runtime, and GET /api/tasks/:id/events carries no lone surrogate, so no `\ud83d`
// escape jq would refuse, and its output events joined are the task's stored output.
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskEvent, TaskOutputEvent } from '../../protocol/tasks.ts';
import { splitJsonTokens, standinJsonText } from '../../tests/ollama-standin/catalog.ts';
import { EventBus } from '../events.ts';
import { buildApp, type App } from '../http/app.ts';
import { taskRoutes } from '../http/routes/tasks.ts';
import type { HttpServices } from '../http/services.ts';
import { startHarness, type Harness } from './test-harness.ts';

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// What JSON.stringify writes for a lone surrogate.
const surrogateEscape = /\\u[dD][89abAB][0-9a-fA-F]{2}|\\u[dD][c-fC-F][0-9a-fA-F]{2}/;

const services: HttpServices = {
  nodeId: 'node-a',
  authenticate: () => ({ tokenId: 'o', name: 'operator', role: 'operator' }),
  can: () => true,
  readiness: () => ({ ready: true, leaderId: 'node-a' }),
  clusterStatus: () => { throw new Error('not used'); },
  agentsStatus: () => { throw new Error('not used'); },
  reportInternalError: () => undefined,
};

const opened: Array<{ harness: Harness; app: App }> = [];

afterEach(async () => {
  for (const { harness, app } of opened.splice(0)) {
    await app.close();
    await harness.close();
  }
});

/** The data of each SSE block of a finished stream, parsed. */
function sseEvents(body: string): TaskEvent[] {
  return body.split('\n\n').flatMap((block) => {
    const data = block.split('\n').filter((line) => line.startsWith('data: ')).map((line) => line.slice(6)).join('\n');
    return data === '' ? [] : [JSON.parse(data) as TaskEvent];
  });
}

describe('task output events of a generation that splits surrogate pairs', () => {
  const model = 'llama3.2:1b';
  const mood = 'am 👨‍👩‍👧‍👦 and 😀 in 网格 𠀀! '.repeat(4);
  const format = { type: 'object', properties: { mood: { const: mood } } };

  it('carry whole characters over SSE, and join to the stored output, whether the stream ends whole or cut inside a pair', async () => {
    // 200 tokens/s: the pieces reach the watcher while the task runs, not only in its final state.
    const harness = await startHarness({ standin: { tokensPerSecond: 200 } });
    const app = await buildApp({ services, plugins: [taskRoutes(harness.service, new EventBus())] });
    opened.push({ harness, app });
    const pieces = splitJsonTokens(standinJsonText(model, 'mood?', format));
    const cutInPair = pieces.findIndex((piece) => /[\uD800-\uDBFF]$/.test(piece));
    expect(cutInPair, 'the stand-in must split a pair for this test to mean anything').toBeGreaterThan(0);

    const cases = [
      { options: null, output: JSON.stringify({ mood }) },
      // The answer stops after the piece that ends on a high surrogate: U+FFFD stands for it.
      { options: { num_predict: cutInPair + 1 }, output: `${pieces.slice(0, cutInPair + 1).join('').slice(0, -1)}\uFFFD` },
    ];
    for (const { options, output } of cases) {
      const submitted = await app.inject({ method: 'POST', url: '/api/tasks', headers: { authorization: 'Bearer operator' }, payload: { model, prompt: 'mood?', format, ...(options === null ? {} : { options }) } });
      expect(submitted.statusCode, submitted.body).toBe(201);
      const id = (submitted.json() as { id: string }).id;
      const stream = await app.inject({ method: 'GET', url: `/api/tasks/${id}/events`, headers: { authorization: 'Bearer operator' } });
      expect(stream.statusCode).toBe(200);
      expect(stream.body).not.toMatch(surrogateEscape);
      const events = sseEvents(stream.body);
      const final = events.at(-1) as Extract<TaskEvent, { type: 'final' }>;
      expect(final.type).toBe('final');
      expect(final.task.status).toBe('completed');
      expect(final.task.output).toBe(output);
      const texts = events.filter((event): event is TaskOutputEvent => event.type === 'output').map((event) => event.text);
      expect(texts.length).toBeGreaterThan(1);
      for (const text of texts) expect(text, JSON.stringify(text)).not.toMatch(loneSurrogate);
      expect(texts.join('')).toBe(final.task.output);
    }
  }, 20_000);
});
