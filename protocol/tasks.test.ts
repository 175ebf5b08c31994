// Tests of the task API shapes: validation names the field and says what to do, defaults
// are filled in, bounds hold, refusals map to the right HTTP errors.
import { describe, expect, it } from 'vitest';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import * as limits from './limits.ts';
import { httpStatusOf } from './errors.ts';
import {
  TaskEvent, TaskListQuery, canonicalJson, placeholderTaskIds, refusalToError, validateTaskSubmit, validationError, type FieldError,
} from './tasks.ts';

function errorsOf(body: unknown): FieldError[] {
  const result = validateTaskSubmit(body);
  if (result.ok) throw new Error(`expected ${JSON.stringify(body)} to be refused`);
  return result.errors;
}

function reasonFor(body: unknown, field: string): string | undefined {
  return errorsOf(body).find((error) => error.field === field)?.reason;
}

describe('validateTaskSubmit', () => {
  it('accepts a minimal body and fills in the defaults', () => {
    expect(validateTaskSubmit({ model: 'llama3', prompt: 'hi' })).toEqual({
      ok: true,
      input: {
        model: 'llama3', capability: null, prompt: 'hi', messages: null, system: null, options: null, format: null, title: null,
        priority: limits.taskPriorityDefault, dependsOn: [], timeoutMs: limits.taskTimeoutMsDefault, maxAttempts: limits.taskMaxAttemptsDefault,
        idempotencyKey: null, metadata: {},
      },
    });
  });

  it('accepts every field, keeps them, and drops repeated dependencies', () => {
    const result = validateTaskSubmit({
      capability: 'code', messages: [{ role: 'system', content: 'terse' }, { role: 'user', content: 'fix {{tasks.t1.output}}' }],
      options: { temperature: 0.2, num_ctx: 8192 }, format: { type: 'object', properties: { ok: { type: 'boolean' } } }, title: 't',
      priority: 10, dependsOn: ['t1', 't2', 't1'], timeoutMs: 60_000, maxAttempts: 1, idempotencyKey: 'k', metadata: { owner: 'ana', n: 1, flag: true, none: null },
    });
    expect(result.ok && result.input).toMatchObject({ capability: 'code', model: null, prompt: null, priority: 10, dependsOn: ['t1', 't2'], format: { type: 'object' } });
    expect(validateTaskSubmit({ model: 'm', prompt: 'p', format: 'json' }).ok).toBe(true);
  });

  it('names unknown fields', () => {
    expect(reasonFor({ model: 'm', prompt: 'p', unknownField: 1 }, 'unknownField')).toBe('is not a known field');
    expect(reasonFor({ model: 'm', messages: [{ role: 'user', content: 'x', name: 'y' }] }, 'messages[0].name')).toBe('is not a known field');
  });

  it('needs model or capability, and exactly one of prompt and messages, not empty', () => {
    expect(reasonFor({ prompt: 'p' }, 'model')).toBe('either model or capability is required');
    expect(reasonFor({ model: 'm' }, 'prompt')).toBe('either prompt or messages is required');
    expect(reasonFor({ model: 'm', prompt: 'p', messages: [{ role: 'user', content: 'x' }] }, 'messages')).toMatch(/cannot be given together with prompt/);
    expect(reasonFor({ model: 'm', prompt: '' }, 'prompt')).toBe('must not be empty');
    expect(reasonFor({ model: 'm', prompt: '   ' }, 'prompt')).toBe('must not be blank');
    expect(reasonFor({ model: 'm', messages: [] }, 'messages')).toBe('must not be empty');
    expect(reasonFor({ model: 'm', messages: [{ role: 'user', content: ' ' }] }, 'messages')).toMatch(/blank/);
    expect(reasonFor({ model: '', prompt: 'p' }, 'model')).toBe('must not be empty');
    // Embedding models (capability embed) cannot answer a prompt: refused, pointing at /api/embed.
    expect(reasonFor({ capability: 'embed', prompt: 'p' }, 'capability')).toMatch(/embedding models, which cannot answer prompts; send embeddings to \/api\/embed/);
  });

  it('explains wrong values per field', () => {
    expect(reasonFor({ model: 'm', prompt: 'p', priority: 11 }, 'priority')).toBe('must be an integer from 0 to 10');
    expect(reasonFor({ model: 'm', prompt: 'p', priority: 2.5 }, 'priority')).toBe('must be an integer from 0 to 10');
    expect(reasonFor({ model: 'm', prompt: 'p', priority: '5' }, 'priority')).toBe('must be an integer from 0 to 10');
    expect(reasonFor({ model: 'm', messages: [{ role: 'bot', content: 'x' }] }, 'messages[0].role')).toBe('must be one of system, user, assistant, tool');
    expect(reasonFor({ model: 'm', messages: [{ role: 'user', content: 3 }] }, 'messages[0].content')).toBe('must be a string, not a number');
    expect(reasonFor({ model: 'm', prompt: 'p', format: 'xml' }, 'format')).toMatch(/must be "json" or a JSON schema object/);
    expect(reasonFor({ model: 'm', prompt: 'p', options: [1] }, 'options')).toBe('must be an object, not an array');
    expect(reasonFor({ model: 'm', prompt: 'p', dependsOn: ['ok', 'not ok'] }, 'dependsOn[1]')).toMatch(/letters, digits/);
    expect(reasonFor({ model: 'm', prompt: 'p', timeoutMs: 5 }, 'timeoutMs')).toMatch(/from 1000 to/);
    expect(reasonFor({ model: 'm', prompt: 'p', maxAttempts: 0 }, 'maxAttempts')).toBe(`must be an integer from 1 to ${limits.taskMaxAttemptsMax}`);
    expect(reasonFor({ model: 'm', prompt: 'p', metadata: { nested: { a: 1 } } }, 'metadata.nested')).toMatch(/values must be strings/);
    expect(reasonFor({ model: 'm', prompt: 'p', idempotencyKey: '' }, 'idempotencyKey')).toBe('must not be empty');
  });

  it('enforces every size bound with the numbers in the reason', () => {
    expect(reasonFor({ model: 'm', prompt: 'x'.repeat(limits.taskPromptLengthMax + 1) }, 'prompt')).toBe(`must have at most ${limits.taskPromptLengthMax} characters (it has ${limits.taskPromptLengthMax + 1})`);
    expect(reasonFor({ model: 'm', prompt: 'p', title: 'x'.repeat(limits.taskTitleLengthMax + 1) }, 'title')).toMatch(/at most 256 characters/);
    expect(reasonFor({ model: 'm', prompt: 'p', dependsOn: Array.from({ length: limits.taskDependsOnMax + 1 }, (_, i) => `t${i}`) }, 'dependsOn')).toMatch(/at most 64 items/);
    expect(reasonFor({ model: 'm', messages: Array.from({ length: limits.taskMessagesMax + 1 }, () => ({ role: 'user', content: 'x' })) }, 'messages')).toMatch(/at most 256 items/);
    const third = 'x'.repeat(Math.floor(limits.taskMessagesTotalLengthMax / 3) + 1);
    expect(reasonFor({ model: 'm', messages: [third, third, third].map((content) => ({ role: 'user', content })) }, 'messages')).toMatch(/together/);
    expect(reasonFor({ model: 'm', prompt: 'p', options: { stop: ['x'.repeat(limits.taskOptionsBytesMax)] } }, 'options')).toMatch(/bytes of JSON/);
    expect(reasonFor({ model: 'm', prompt: 'p', format: { description: 'x'.repeat(limits.taskFormatSchemaBytesMax) } }, 'format')).toMatch(/bytes of JSON/);
    const manyKeys = Object.fromEntries(Array.from({ length: limits.taskMetadataKeysMax + 1 }, (_, i) => [`k${i}`, i]));
    expect(reasonFor({ model: 'm', prompt: 'p', metadata: manyKeys }, 'metadata')).toMatch(/at most 32 keys/);
    expect(reasonFor({ model: 'm', prompt: 'p', metadata: { ['k'.repeat(65)]: 1 } }, 'metadata')).toMatch(/keys must have 1 to 64/);
    const bulky = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`k${i}`, 'v'.repeat(1_000)]));
    expect(reasonFor({ model: 'm', prompt: 'p', metadata: bulky }, 'metadata')).toMatch(/bytes of JSON/);
  });

  it('requires quoted task outputs to be dependencies', () => {
    expect(reasonFor({ model: 'm', prompt: 'use {{tasks.t9.output}}', dependsOn: ['t1'] }, 'prompt')).toBe('refers to the output of t9, which must also be listed in dependsOn');
    expect(reasonFor({ model: 'm', prompt: 'p', system: '{{tasks.s.output}}' }, 'system')).toMatch(/output of s/);
    expect(reasonFor({ model: 'm', messages: [{ role: 'user', content: '{{tasks.q.output}}' }] }, 'messages[0].content')).toMatch(/output of q/);
    expect(placeholderTaskIds('{{tasks.a.output}} {{ tasks.b-2.output }} {{tasks.c.input}}')).toEqual(['a', 'b-2']);
  });

  it('refuses a body that is not an object, and caps the number of reasons', () => {
    expect(errorsOf('prompt')).toEqual([{ field: 'body', reason: 'must be a JSON object, not a string' }]);
    expect(errorsOf(null)[0]?.reason).toBe('must be a JSON object, not null');
    expect(errorsOf([])[0]?.reason).toBe('must be a JSON object, not an array');
    const junk = Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`x${i}`, i]));
    expect(errorsOf(junk).length).toBe(20);
  });

  it('turns reasons into one 400 error that lists them', () => {
    const error = validationError(errorsOf({ model: 'm', prompt: 'p', priority: 99 }));
    expect(httpStatusOf[error.code]).toBe(400);
    expect(error.message).toBe('invalid task: priority: must be an integer from 0 to 10');
    expect(error.details).toEqual({ fields: [{ field: 'priority', reason: 'must be an integer from 0 to 10' }] });
  });
});

describe('refusalToError', () => {
  it('maps refusals to HTTP errors, queue-full with Retry-After', () => {
    const full = refusalToError({ code: 'queue-full', message: 'full' });
    expect(httpStatusOf[full.code]).toBe(429);
    expect(full.retryAfterSeconds).toBeGreaterThan(0);
    const unknown = refusalToError({ code: 'unknown-dependency', message: 'x', ids: ['a'] });
    expect(httpStatusOf[unknown.code]).toBe(400);
    expect(unknown.details).toEqual({ refusal: 'unknown-dependency', ids: ['a'] });
    expect(httpStatusOf[refusalToError({ code: 'not-found', message: 'x' }).code]).toBe(404);
    expect(httpStatusOf[refusalToError({ code: 'stale-attempt', message: 'x' }).code]).toBe(409);
  });
});

describe('shapes', () => {
  it('checks list queries and events', () => {
    const query = TypeCompiler.Compile(TaskListQuery);
    expect(query.Check({ status: 'queued', limit: 10, cursor: '42' })).toBe(true);
    expect(query.Check({ status: 'sleeping' })).toBe(false);
    expect(query.Check({ cursor: 'abc' })).toBe(false);
    const event = TypeCompiler.Compile(TaskEvent);
    expect(event.Check({ type: 'output', taskId: 't', attempt: 1, sequence: 0, text: 'he' })).toBe(true);
    expect(event.Check({ type: 'status', taskId: 't', status: 'running', attempt: 1, node: 'n1', at: 5, reason: null })).toBe(true);
    expect(event.Check({ type: 'output', taskId: 't', attempt: 1, sequence: 0, text: 'x'.repeat(limits.taskOutputChunkLengthMax + 1) })).toBe(false);
  });

  it('canonicalJson sorts keys at every depth and drops undefined', () => {
    expect(canonicalJson({ b: { d: 1, c: [2, { f: 1, e: 0 }] }, a: undefined, z: null })).toBe('{"b":{"c":[2,{"e":0,"f":1}],"d":1},"z":null}');
  });
});
