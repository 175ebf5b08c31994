// The dashboard against a real hivemesh daemon (one node, with the Ollama stand-in): sign
// in with the node's admin token, see the node and its models, submit a task from the
// form, see it listed and reported by the event feed, and watch its output stream in
// until it completes. This checks the page against the real routes and event streams
// rather than the fake of dashboard.test.ts.
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStandin, type Standin } from '../ollama-standin/server.ts';
import { ProcessGroup, waitUntil, type DaemonProcess } from '../support/processes.ts';

const chromiumPath = '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);
if (!haveChromium) console.warn(`tests/browser: skipped, ${chromiumPath} is missing (install it: apt-get install -y chromium)`);

// Generous: this suite shares two cores with real daemons and the rest of the test run.
const stepTimeoutMs = 20_000;

describe.skipIf(!haveChromium)('dashboard on a real daemon', () => {
  const group = new ProcessGroup();
  let standin: Standin;
  let daemon: DaemonProcess;
  let browser: Browser;

  beforeAll(async () => {
    standin = await startStandin({ host: '127.0.0.1', port: 0, models: ['llama3.2:3b'], tokensPerSecond: 40, coldLoadMs: 200, responseTokens: 120, logFile: null });
    group.onCleanup(() => standin.close());
    daemon = await group.daemon({ name: 'dash-live', ollamaUrl: standin.url, mdns: false });
    daemon.start();
    await waitUntil('the daemon to be ready', async () => (await daemon.api('/health/ready', { token: null })).status === 200, 30_000, 200)
      .catch((error: Error) => {
        throw new Error(`${error.message}\n${daemon.output.slice(-3000)}`);
      });
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      timeout: 20_000,
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await group.stopAll();
  });

  it('signs in, shows the node and its models, submits a task and streams its output to the end', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(stepTimeoutMs);
    const errors: string[] = [];
    const page = await context.newPage();
    page.on('pageerror', (error) => errors.push(error.message));
    const failedRequests: string[] = [];
    page.on('requestfailed', (request) => failedRequests.push(`${request.url()}: ${request.failure()?.errorText ?? 'failed'}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && failedRequests.length < 50) failedRequests.push(`console: ${message.text()}`);
    });
    try {
      await page.goto(daemon.apiUrl);
      await page.locator('#token-dialog').waitFor({ state: 'visible', timeout: 30_000 });
      await page.locator('#token-input').fill(daemon.adminToken);
      await page.locator('#token-save').click();
      const card = page.locator('#node-list article', { hasText: 'dash-live' });
      await card.getByText('● alive').waitFor();
      await card.getByText('llama3.2:3b', { exact: false }).first().waitFor();
      await page.locator('#events-state', { hasText: 'live' }).waitFor();
      // The node says what the token is (GET /api/tokens/self): its admin token, so the form is offered.
      await page.locator('#token-who', { hasText: 'admin@dash-live · admin' }).waitFor();
      await page.locator('#submit-form').waitFor({ state: 'visible' });

      await page.locator('#submit-model').fill('llama3.2:3b');
      await page.locator('#submit-title-input').fill('live check');
      await page.locator('#submit-prompt').fill('Write two sentences about meshes.');
      await page.locator('#submit-button').click();
      await page.locator('#submit-result', { hasText: 'Submitted task' }).waitFor();

      // The task shows in the list and its detail opens; the cluster feed reports its transition.
      const detail = page.locator('#task-detail');
      await detail.getByText('live check').waitFor();
      await page.locator('#task-rows tr', { hasText: 'live check' }).waitFor();
      await page.locator('#event-list', { hasText: 'task' }).waitFor();
      const listed = await daemon.api<{ tasks: Array<{ title: string | null; model: string | null }> }>('/api/tasks');
      expect(listed.body.tasks.map((task) => [task.title, task.model])).toEqual([['live check', 'llama3.2:3b']]);

      // The stand-in generates 120 tokens at 40 tokens/s, so the text arrives in pieces for 3 s while the panel watches.
      const output = detail.locator('pre.output');
      await expect.poll(async () => ((await output.textContent()) ?? '').length, { timeout: 20_000 }).toBeGreaterThan(0);
      const partial = (await output.textContent()) ?? '';
      await detail.locator('.badge', { hasText: 'completed' }).waitFor({ timeout: 30_000 });
      const final = (await output.textContent()) ?? '';
      expect(final.length).toBeGreaterThan(20);
      // Seen while it was being generated: a beginning of the final text, shorter than it.
      expect(partial.length).toBeLessThan(final.length);
      expect(final.startsWith(partial)).toBe(true);
      expect(await detail.textContent()).toContain('tok/s');
      await page.locator('#task-rows tr', { hasText: 'live check' }).locator('.badge', { hasText: 'completed' }).waitFor();
      await page.screenshot({ path: '/tmp/dashboard-live.png', fullPage: true });
      expect(errors).toEqual([]);
    } catch (error) {
      // Say what the node thought of the task, and keep a picture of the page.
      await page.screenshot({ path: '/tmp/dashboard-live-failure.png', fullPage: true }).catch(() => undefined);
      const tasks = await daemon.api('/api/tasks').catch((problem: Error) => ({ body: problem.message }));
      throw new Error(`${(error as Error).message}\npage errors: ${JSON.stringify(errors)}\nfailed requests: ${JSON.stringify(failedRequests.slice(0, 20))}`
        + `\ntasks on the node: ${JSON.stringify(tasks.body).slice(0, 2000)}\ndaemon output: ${daemon.output.slice(-2000)}`);
    } finally {
      await context.close();
    }
  }, 60_000);
});
