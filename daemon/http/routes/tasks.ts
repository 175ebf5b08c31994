// The task API (ARCHITECTURE.md): create, list, get, assign, cancel, and the task and
// cluster event streams as Server-Sent Events. Writes answer only after commit.
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../../../protocol/api.ts';
import { Task, TaskId, TaskList, TaskListQuery, TaskPin, TaskSubmit, validateTaskSubmit, validationError } from '../../../protocol/tasks.ts';
import { ErrorCode, HivemeshError } from '../../../protocol/errors.ts';
import { subscribersMax, type EventBus } from '../../events.ts';
import type { TaskService } from '../../tasks/service.ts';
import type { App } from '../app.ts';
import { streamSse } from '../sse.ts';

const IdParams = Type.Object({ id: TaskId }, { additionalProperties: false });
const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody, 429: ErrorBody, 503: ErrorBody };

export function taskRoutes(tasks: TaskService, bus: EventBus) {
  return async (app: App) => {
    app.post('/api/tasks', {
      config: { action: 'submit' },
      schema: { body: TaskSubmit, response: { 201: Task, ...errors } },
      // The task body's own validator names each bad field with a reason a person can act on.
      validatorCompiler: () => (body: unknown) => {
        const validation = validateTaskSubmit(body);
        return validation.ok ? { value: body } : { error: validationError(validation.errors) };
      },
    }, async (request, reply) => {
      const { task, created } = await tasks.submit(request.body);
      // A replay with the same idempotencyKey and body answers as the original did.
      if (!created) reply.header('idempotent-replayed', 'true');
      return reply.code(201).send(task);
    });

    app.get('/api/tasks', { config: { action: 'read' }, schema: { querystring: TaskListQuery, response: { 200: TaskList, ...errors } } }, async (request) =>
      tasks.list(request.query));

    app.get('/api/tasks/:id', { config: { action: 'read' }, schema: { params: IdParams, response: { 200: Task, ...errors } } }, async (request) =>
      tasks.find(request.params.id));

    app.put('/api/tasks/:id/assign', { config: { action: 'assign' }, schema: { params: IdParams, body: TaskPin, response: { 200: Task, ...errors } } }, async (request) =>
      tasks.assign(request.params.id, request.body.node));

    app.delete('/api/tasks/:id', { config: { action: 'cancel' }, schema: { params: IdParams, response: { 200: Task, ...errors } } }, async (request) =>
      tasks.cancel(request.params.id, `cancelled by ${request.principal?.name ?? 'a client'}`));

    /** 429 before a stream starts, rather than an error event inside an accepted one. */
    const roomForStream = () => {
      if (bus.full) throw new HivemeshError(ErrorCode.rateLimited, `over ${subscribersMax} event streams are open on this node; close some, or use another node`, { retryAfterSeconds: 5 });
    };

    app.get('/api/tasks/:id/events', { config: { action: 'read' }, schema: { params: IdParams } }, async (request, reply) => {
      await tasks.find(request.params.id); // 404 before the stream starts
      roomForStream();
      await streamSse(request, reply, async function* (signal) {
        for await (const event of tasks.events(request.params.id, signal)) yield { event: event.type, data: event };
      });
    });

    app.get('/api/events', { config: { action: 'read' } }, async (request, reply) => {
      roomForStream();
      await streamSse(request, reply, async function* (signal) {
        yield { event: 'hello', data: { at: Date.now() } };
        for await (const event of bus.subscribe(signal)) yield { event: event.type, data: event };
      });
    });
  };
}
