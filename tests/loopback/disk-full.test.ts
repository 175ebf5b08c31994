// A daemon whose disk fills up: its Ready loop's synced write fails, consensus stops on that
// node, and the node must say so everywhere a user or the scheduler looks: writes answer 503
// with the reason (not 500 "internal error", not a 5 s "no quorum"), /health/ready is 503,
// an alert names the full disk and what to do, and its heartbeat offers no slots, so the
// leader of a larger cluster sends it no task. The data dir is a small tmpfs (needs root,
// as the LAN suites do; skipped with a message otherwise).
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentsStatus, formCluster, prepareDaemons } from '../support/cluster.ts';
import { ProcessGroup, tempDir, waitUntil } from '../support/processes.ts';

function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Writes a file until the file system is full. */
function fillUp(path: string): void {
  const fd = openSync(path, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, block);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
  } finally {
    closeSync(fd);
  }
}

const mountPoint = tempDir('disk-full');
const mounted = process.getuid?.() === 0 && mountTmpfs(mountPoint, '24m');
if (!mounted) console.warn('tests/loopback/disk-full.test.ts: skipped (needs root to mount a small tmpfs)');

describe.skipIf(!mounted)('a daemon whose disk is full', () => {
  const group = new ProcessGroup();
  afterAll(async () => {
    await group.stopAll();
    try {
      execFileSync('umount', [mountPoint], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
    rmSync(mountPoint, { recursive: true, force: true });
  });

  it('answers writes with the reason, is not ready, raises an alert and offers no slots', async () => {
    const dataDir = join(mountPoint, 'data');
    mkdirSync(dataDir);
    const [solo] = await prepareDaemons(group, [{ name: 'full', mdns: false, dataDir }], { bootstrapAll: false });
    await formCluster([solo!], 45_000, { voters: 1 });
    const submit = (n: number) => solo!.api<{ error?: { code: string; message: string } }>('/api/tasks', {
      method: 'POST', body: { model: 'absent:1b', prompt: `fill ${n} ${'x'.repeat(60_000)}`, idempotencyKey: `fill-${n}` }, timeoutMs: 10_000,
    });
    expect((await submit(0)).status).toBe(201);
    fillUp(join(mountPoint, 'filler'));
    // The next writes fail on the disk: each answered at once, with what to do.
    const answers: Array<{ status: number; code?: string; message?: string; ms: number }> = [];
    for (let n = 1; n <= 40 && !answers.some((answer) => answer.status !== 201); n += 1) {
      const started = performance.now();
      const { status, body } = await submit(n);
      answers.push({ status, code: body.error?.code, message: body.error?.message, ms: performance.now() - started });
    }
    const refused = answers.filter((answer) => answer.status !== 201);
    expect(refused.length, JSON.stringify(answers.slice(-3))).toBeGreaterThan(0);
    for (const answer of refused) {
      expect(answer.status).toBe(503);
      expect(answer.code).toBe('unavailable');
      expect(answer.message).toMatch(/disk write failed \(.*No space left on device.*\).*Free disk space in its data dir, then restart the daemon/);
      expect(answer.ms).toBeLessThan(4_000);
    }
    const again = await submit(100);
    expect(again.status).toBe(503);
    expect(again.body.error?.message).toMatch(/send writes to another node/);

    const ready = await solo!.api<{ error?: { message: string } }>('/health/ready', { token: null });
    expect(ready.status).toBe(503);
    expect(JSON.stringify(ready.body)).toMatch(/disk write in .* failed/);
    const alert = await waitUntil('the storage-failure alert', async () => {
      const { body } = await solo!.api<{ alerts: Array<{ kind: string; message: string }>; role: string; leaderId: string | null }>('/api/status/cluster');
      return body.alerts.find((candidate) => candidate.kind === 'storage-failure') ?? null;
    }, 5_000, 100);
    expect(alert.message).toMatch(/No space left on device.*Free disk space there, then restart the daemon/);
    const self = await waitUntil('a heartbeat with no slots', async () => {
      const node = (await agentsStatus(solo!, 2_000))?.nodes.find((candidate) => candidate.id === solo!.nodeId);
      return node?.load.concurrencyLimit === 0 ? node : null;
    }, 5_000, 100);
    expect(self.raftRole).not.toBe('leader');
    // Reads still answer.
    expect((await solo!.api('/api/tasks?limit=1')).status).toBe(200);
  }, 90_000);
});
