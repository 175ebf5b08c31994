// Task ids: unique across refills of the random pool they are drawn from.
import { describe, expect, it } from 'vitest';
import { newTaskId } from './service.ts';

describe('newTaskId', () => {
  it('gives distinct ids of the documented shape across several refills of its random pool', () => {
    const ids = Array.from({ length: 5_000 }, () => newTaskId());
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^t_[0-9a-z]+[0-9a-f]{12}$/);
    // The random part differs between consecutive ids (not a counter, not a repeated block).
    const tails = new Set(ids.map((id) => id.slice(-12)));
    expect(tails.size).toBe(ids.length);
  });
});
