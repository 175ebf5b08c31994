// Browser tests of the dashboard: Debian's Chromium (through playwright-core) against the
// real fastify app serving web-ui/static, with a fake node behind it (fake-cluster.ts).
// Skipped, with a message, where /usr/bin/chromium is not installed.
import { existsSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AgentsStatus } from '../../protocol/api.ts';
import { FakeCluster, adminToken, hostileNodeName, operatorToken, viewerToken } from './fake-cluster.ts';

const chromiumPath = '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);
if (!haveChromium) console.warn(`tests/browser: skipped, ${chromiumPath} is missing (install it: apt-get install -y chromium)`);

/** Each step waits at most this long for the page; the whole suite stays well under a minute. */
const stepTimeoutMs = 5_000;

describe.skipIf(!haveChromium)('dashboard in Chromium', () => {
  let browser: Browser;
  let fake: FakeCluster;
  let baseUrl: string;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    // launch() starts Chromium with a fresh, throw-away profile directory of its own.
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
      timeout: 20_000,
    });
  });

  afterAll(async () => {
    await browser?.close();
  });

  beforeEach(async () => {
    fake = new FakeCluster();
    baseUrl = await fake.start();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    context.setDefaultTimeout(stepTimeoutMs);
    // Nothing but this node may be contacted: the LAN may have no internet.
    await context.route((url) => !url.href.startsWith(baseUrl), (route) => {
      pageErrors.push(`request outside the node: ${route.request().url()}`);
      return route.abort();
    });
    page = await context.newPage();
    pageErrors.length = 0;
    page.on('pageerror', (error) => pageErrors.push(error.message));
  });

  afterEach(async () => {
    await context?.close();
    await fake?.stop();
    expect(pageErrors).toEqual([]);
  });

  async function openSignedIn(token = adminToken): Promise<void> {
    await context.addInitScript((value) => window.localStorage.setItem('hivemesh.token', value), token);
    await page.goto(baseUrl);
    await page.locator('#summary').getByText('atlas').first().waitFor();
  }

  it('asks for a token, explains where to find one, then shows the cluster status', async () => {
    await page.goto(baseUrl);
    const dialog = page.locator('#token-dialog');
    await dialog.waitFor({ state: 'visible' });
    await expect(dialog.textContent()).resolves.toContain('admin.token');
    await expect(dialog.textContent()).resolves.toContain('hivemesh token create --role viewer --name dash');
    await page.screenshot({ path: '/tmp/dashboard-token.png' });
    await page.locator('#token-input').fill(adminToken);
    await page.locator('#token-save').click();
    await dialog.waitFor({ state: 'hidden' });

    const summary = page.locator('#summary');
    await summary.getByText('atlas').first().waitFor();
    const text = await summary.textContent();
    expect(text).toContain('c0ffee…000001');
    expect(text).toContain('7 · 1234');
    expect(text).toContain('2 alive');
    expect(text).toContain('1 suspect');
    expect(text).toContain('1 dead');
    expect(await page.evaluate(() => window.localStorage.getItem('hivemesh.token'))).toBe(adminToken);
    // Alerts from the server are shown prominently.
    await expect(page.locator('#alerts').textContent()).resolves.toContain('Identity conflict');
    await expect(page.locator('#alerts').textContent()).resolves.toContain('Ollama is down on borealis');
    // A dead node's Ollama is no news: the node itself is down.
    await expect(page.locator('#alerts').textContent()).resolves.not.toContain('old-laptop');

    // "Forget token" removes it and asks again.
    await page.locator('#token-forget').click();
    await dialog.waitFor({ state: 'visible' });
    expect(await page.evaluate(() => window.localStorage.getItem('hivemesh.token'))).toBeNull();
  });

  it('shows the server message on 401 and asks again until a valid token is given', async () => {
    await context.addInitScript(() => window.localStorage.setItem('hivemesh.token', 'hm_wrong_token'));
    await page.goto(baseUrl);
    const problem = page.locator('#token-problem');
    await problem.waitFor({ state: 'visible' });
    expect(await problem.textContent()).toContain('the bearer token is not valid on this cluster');
    await page.locator('#token-input').fill('still-wrong');
    await page.locator('#token-save').click();
    await expect.poll(async () => (await problem.isVisible()) && await page.locator('#token-dialog').isVisible(), { timeout: stepTimeoutMs }).toBe(true);
    await page.locator('#token-input').fill(adminToken);
    await page.locator('#token-save').click();
    await page.locator('#summary').getByText('atlas').first().waitFor();
    expect(await page.locator('#token-dialog').isVisible()).toBe(false);
  });

  it('renders every node with its state in words, GPUs, models and load, and escapes what nodes report', async () => {
    await openSignedIn();
    const cards = page.locator('#node-list article');
    await expect.poll(() => cards.count(), { timeout: stepTimeoutMs }).toBe(4);
    const atlas = cards.filter({ hasText: 'atlas' });
    const atlasText = await atlas.textContent();
    expect(atlasText).toContain('● alive');
    expect(atlasText).toContain('leader');
    expect(atlasText).toContain('GeForce RTX 4090');
    expect(atlasText).toContain('llama3.1:8b');
    expect(atlasText).toContain('expires in');
    expect(atlasText).toContain('1 / 4 running, 2 queued');
    expect(atlasText).toContain('code (90%)');
    expect(await atlas.locator('[role=meter][aria-label=VRAM]').first().getAttribute('aria-valuetext')).toBe('20 GiB / 24 GiB');

    const suspect = cards.filter({ hasText: 'gpu-box' });
    expect(await suspect.textContent()).toContain('◐ suspect');
    // The name arrives as text, not markup, and a javascript: API URL is not a link.
    expect(await suspect.locator('h3').textContent()).toBe(hostileNodeName);
    expect(await suspect.locator('a').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();

    const dead = cards.filter({ hasText: 'old-laptop' });
    const deadText = await dead.textContent();
    expect(deadText).toContain('✕ dead');
    expect(deadText).toContain('unreachable');
    expect(deadText).toContain('ETIMEDOUT');

    // A refresh redraws only the cards that changed: atlas keeps its element, the suspect node turns dead.
    await atlas.evaluate((card) => { (card as HTMLElement & { marked?: boolean }).marked = true; });
    fake.editAgents = (agents) => ({ nodes: agents.nodes.map((node) => (node.state === 'suspect' ? { ...node, state: 'dead' as const, lastSeenAgoMs: 9_000 } : node)) });
    await cards.filter({ hasText: 'gpu-box' }).getByText('✕ dead').waitFor();
    expect(await atlas.evaluate((card) => (card as HTMLElement & { marked?: boolean }).marked)).toBe(true);

    // A voter this node never heard from: its card says what is unknown instead of showing empty hardware.
    const unheardId = '12D3KooWUnheardVoterXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX';
    const withUnheard = (name: string) => (agents: AgentsStatus): AgentsStatus => ({
      nodes: [...agents.nodes, {
        ...agents.nodes[0]!, id: unheardId, name, apiUrl: '', state: 'dead' as const, raftRole: 'follower' as const, self: false,
        hardware: { cpu: { model: '', cores: 0, load: 0 }, memory: { totalBytes: 0, usedBytes: 0 }, gpus: [] },
        ollama: { url: '', reachable: false, version: null, error: null }, models: { installed: [], loaded: [], tokensPerSecond: {} },
        load: { running: 0, queued: 0, concurrencyLimit: 0 }, agents: [], capabilities: [], neverHeard: true as const,
      }],
    });
    fake.editAgents = withUnheard(unheardId);
    const unheard = page.locator(`[data-node-id="${unheardId}"]`);
    await unheard.waitFor();
    const unheardText = await unheard.textContent();
    expect(unheardText).toContain('Not heard from since this node started');
    expect(unheardText).toContain('counts toward the quorum');
    expect(unheardText).toContain('never, since this node started');
    expect(unheardText).not.toContain('0 cores');
    expect(unheardText).not.toContain('unreachable');
    // Named in the replicated state: the card shows the whole name, not a shortened one.
    fake.editAgents = withUnheard('gpu-box-basement-2');
    await unheard.locator('h3').getByText('gpu-box-basement-2', { exact: true }).waitFor();

    // The cluster event feed shows events from the stream.
    await page.locator('#event-list').getByText('leader changed').waitFor();
    expect(await page.locator('#events-state').textContent()).toBe('live');
  });

  it('marks a silent node\'s facts as last known and says whether it still counts toward the quorum', async () => {
    await openSignedIn();
    const cards = page.locator('#node-list article');
    await expect.poll(() => cards.count(), { timeout: stepTimeoutMs }).toBe(4);
    // This node is alive: its facts are current, its Ollama reachable in green.
    const atlas = cards.filter({ hasText: 'atlas' });
    expect(await atlas.textContent()).not.toContain('Last known facts');
    expect(await atlas.locator('.badge.ok', { hasText: '✓ reachable' }).count()).toBe(1);
    // A suspect voter: last known facts, and still part of the quorum.
    const suspect = cards.filter({ hasText: 'gpu-box' });
    const suspectText = await suspect.textContent();
    expect(suspectText).toContain('Last known facts, from 3.2 s ago');
    expect(suspectText).toContain('As a voter it still counts toward the quorum until it comes back or the leader replaces it');
    expect(suspectText).toContain('load was 90%');
    // A dead learner: last known facts, but the quorum does not depend on it.
    const dead = cards.filter({ hasText: 'old-laptop' });
    const deadText = await dead.textContent();
    expect(deadText).toContain('Last known facts, from 1 min 35 s ago: the node is down');
    expect(deadText).toContain('was unreachable');
    expect(deadText).not.toContain('✕ unreachable');
    expect(deadText).not.toContain('counts toward the quorum');
    expect(deadText).toContain('the quorum does not depend on it');

    // A dead voter whose last heartbeat had Ollama up, two tasks running and a model loaded.
    const deadVoter = (lastSeenAgoMs: number) => (agents: AgentsStatus): AgentsStatus => ({
      nodes: agents.nodes.map((node) => (node.name !== 'old-laptop' ? node : {
        ...node, raftRole: 'follower' as const, lastSeenAgoMs, load: { running: 2, queued: 0, concurrencyLimit: 2 },
        ollama: { url: 'http://127.0.0.1:11434', reachable: true, version: '0.12.3', error: null },
        models: { installed: [{ name: 'llama3.1:8b', sizeBytes: 4.9 * 1024 ** 3 }], loaded: [{ name: 'llama3.1:8b', sizeBytes: 6 * 1024 ** 3, vramBytes: 5 * 1024 ** 3, expiresAt: null }], tokensPerSecond: {} },
      })),
    });
    fake.editAgents = deadVoter(95_000);
    await dead.getByText('was reachable').waitFor();
    const deadVoterText = await dead.textContent();
    expect(deadVoterText).toContain('Last known facts, from');
    expect(deadVoterText).toContain('was 2 / 2 running');
    expect(deadVoterText).not.toContain('✓ reachable');
    expect(await dead.locator('.badge.ok').count()).toBe(0);
    expect(await dead.locator('dl.stale-facts').count()).toBe(1);
    expect(deadVoterText).toContain('As a voter it still counts toward the quorum');
    // The age in the note moves on with the refreshes (the card itself is kept), as "last seen" does.
    await dead.evaluate((card) => { (card as HTMLElement & { marked?: boolean }).marked = true; });
    fake.editAgents = deadVoter(200_000);
    await dead.locator('.stale-note', { hasText: 'from 3 min 20 s ago' }).waitFor();
    expect(await dead.evaluate((card) => (card as HTMLElement & { marked?: boolean }).marked)).toBe(true);
    await page.locator('#nodes').screenshot({ path: '/tmp/dashboard-silent-nodes.png' });
  });

  it('gives a no-leader alert one age, and says in the feed when no leader is known', async () => {
    fake.editCluster = (cluster) => ({
      ...cluster, leaderId: null,
      alerts: [...cluster.alerts, {
        kind: 'no-leader', since: new Date(Date.now() - 39_000).toISOString(),
        message: 'no leader for 44 s: this node reaches 1 of 3 voters and a leader needs 2, so writes are refused (503) until then. Start or reconnect the voters that are down: gpu-box.',
      }],
    });
    await openSignedIn();
    const noLeader = page.locator('#alerts .alert', { hasText: 'no leader for 44 s' });
    await noLeader.waitFor();
    const noLeaderText = await noLeader.textContent();
    expect(noLeaderText).toContain('no leader for 44 s');
    expect(noLeaderText).not.toContain('since');
    // Other alerts keep their age; the page's own generic no-leader alert gives way to the server's.
    expect(await page.locator('#alerts .alert', { hasText: 'Identity conflict' }).locator('.since').count()).toBe(1);
    expect(await page.locator('#alerts').textContent()).not.toContain('No leader.');

    await page.locator('#events-state', { hasText: 'live' }).waitFor();
    fake.emitClusterEvent('leader.changed', { type: 'leader.changed', at: Date.now(), leaderId: null, term: 3 });
    const line = page.locator('#event-list li', { hasText: 'term 3' });
    await line.waitFor();
    expect(await line.locator('.text').textContent()).toBe('no leader known · term 3');
  });

  it('shows the API validation errors next to the fields, then submits', async () => {
    await openSignedIn();
    await page.locator('#submit-priority').fill('11');
    await page.locator('#submit-button').click();
    const priorityError = page.locator('#submit-priority-error');
    await priorityError.waitFor({ state: 'visible' });
    expect(await priorityError.textContent()).toContain('integer from 0 to 10');
    expect(await page.locator('#submit-model-error').textContent()).toBe('Either model or capability is required.');
    expect(await page.locator('#submit-prompt-error').textContent()).toBe('Either prompt or messages is required.');
    expect(await page.locator('#submit-priority').getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#submit-form-error').textContent()).toContain('correct the fields');

    await page.locator('#submit-model').fill('llama3.1:8b');
    await page.locator('#submit-prompt').fill('Write a haiku about <b>gossip</b>');
    await page.locator('#submit-title-input').fill('haiku');
    await page.locator('#submit-priority').fill('7');
    await page.locator('#submit-button').click();
    await page.locator('#submit-result').getByText('Submitted task task-0001').waitFor();
    expect(await page.locator('#submit-priority-error').isVisible()).toBe(false);
    expect(fake.submissions.at(-1)).toEqual({ model: 'llama3.1:8b', title: 'haiku', prompt: 'Write a haiku about <b>gossip</b>', priority: 7 });
    await page.locator('#task-rows').getByText('haiku').waitFor();
    // Why a queued task waits shows in the list too.
    await page.locator('#task-rows tr', { hasText: 'haiku' }).getByText('no node has this model loaded yet').waitFor();
    // The new task opens in the detail panel with why it waits.
    await page.locator('#task-detail').getByText('no node has this model loaded yet').waitFor();

    // A refusal without field details (429, queue full) shows the server's words and when to retry.
    fake.queueFull = true;
    await page.locator('#submit-prompt').fill('one more');
    await page.locator('#submit-button').click();
    const formError = page.locator('#submit-form-error');
    await formError.getByText('the task queue is full', { exact: false }).waitFor();
    expect(await formError.textContent()).toBe('Not submitted: the task queue is full (10000 active tasks); wait for some to finish. Try again in 5 s.');
  });

  it('streams a running task\'s output live from its event stream, then shows the final state', async () => {
    const task = fake.addTask({ id: 'gen-42', title: 'summarise the logs', status: 'running', attempt: 1, assignedNode: '12D3KooWSelfNode000000000000000000000000000001', startedAt: Date.now() });
    await openSignedIn();
    await page.locator('#task-rows button', { hasText: 'gen-42' }).click();
    await expect.poll(() => fake.streamsFor('gen-42'), { timeout: stepTimeoutMs }).toBe(1);
    const output = page.locator('#task-detail pre.output');
    fake.emitTaskEvent('gen-42', { type: 'output', taskId: 'gen-42', attempt: 1, sequence: 0, text: 'The logs show ' });
    fake.emitTaskEvent('gen-42', { type: 'output', taskId: 'gen-42', attempt: 1, sequence: 1, text: '<script>x</script> three restarts' });
    await expect.poll(() => output.textContent(), { timeout: stepTimeoutMs }).toBe('The logs show <script>x</script> three restarts');
    // A replayed chunk (after a reconnect) is not shown twice.
    fake.emitTaskEvent('gen-42', { type: 'output', taskId: 'gen-42', attempt: 1, sequence: 1, text: '<script>x</script> three restarts' });
    fake.emitTaskEvent('gen-42', { type: 'output', taskId: 'gen-42', attempt: 1, sequence: 2, text: '.' });
    await expect.poll(() => output.textContent(), { timeout: stepTimeoutMs }).toBe('The logs show <script>x</script> three restarts.');
    expect(await page.locator('#task-detail .stream-state').textContent()).toBe('streaming live');

    const finished = { ...task, status: 'completed' as const, output: 'The logs show <script>x</script> three restarts.', completedAt: Date.now(),
      usage: { promptTokens: 31, completionTokens: 9, tokensPerSecond: 88.5, loadMs: 0, totalMs: 140 },
      attempts: [{ attempt: 1, node: task.assignedNode!, term: 7, model: 'llama3.1:8b', agentId: null, status: 'completed' as const, assignedAt: Date.now() - 500, startedAt: Date.now() - 400, endedAt: Date.now(), error: null }] };
    fake.emitTaskEvent('gen-42', { type: 'status', taskId: 'gen-42', status: 'completed', attempt: 1, node: task.assignedNode, at: Date.now(), reason: null });
    fake.emitTaskEvent('gen-42', { type: 'final', task: finished });
    const detail = page.locator('#task-detail');
    await detail.getByText('88.5 tok/s', { exact: false }).waitFor();
    expect(await detail.locator('.badge').first().textContent()).toBe('✓ completed');
    expect(await detail.locator('table.attempts').textContent()).toContain('atlas');
    expect(await detail.getByRole('button', { name: 'Cancel task' }).count()).toBe(0);
    expect(await output.textContent()).toBe(finished.output);

    // The address names the open task; opening it again shows the same task.
    expect(new URL(page.url()).hash).toBe('#task=gen-42');
    await page.reload();
    await page.locator('#task-detail').getByText('88.5 tok/s', { exact: false }).waitFor();
  });

  it('cancels a task with DELETE and shows it cancelled', async () => {
    fake.addTask({ id: 'long-1', title: 'long job', status: 'running', attempt: 1, assignedNode: '12D3KooWSelfNode000000000000000000000000000001' });
    await openSignedIn();
    await page.locator('#task-rows button', { hasText: 'long-1' }).click();
    const cancel = page.locator('#task-detail').getByRole('button', { name: 'Cancel task' });
    await cancel.click();
    await expect.poll(() => fake.cancelRequests, { timeout: stepTimeoutMs }).toEqual(['long-1']);
    await page.locator('#task-detail .badge', { hasText: 'cancelled' }).waitFor();
    await page.locator('#task-rows tr', { hasText: 'long-1' }).locator('.badge', { hasText: 'cancelled' }).waitFor();
  });

  it('offers the submit form and cancel only to a token whose role may use them, and follows a change of token', async () => {
    fake.addTask({ id: 'queued-1', title: 'wait for me', status: 'queued' });
    await context.addInitScript(() => { window.location.hash = '#task=queued-1'; });
    await openSignedIn(viewerToken);
    const form = page.locator('#submit-form');
    const unavailable = page.locator('#submit-unavailable');
    const detail = page.locator('#task-detail');
    const cancel = detail.getByRole('button', { name: 'Cancel task' });
    const who = page.locator('#token-who');

    // A viewer: read-only, said in words, and no control that the node would refuse.
    await who.getByText('dash · viewer (read-only)').waitFor();
    await detail.getByText('wait for me').waitFor();
    expect(await form.isVisible()).toBe(false);
    expect(await page.locator('#submit-prompt').isVisible()).toBe(false);
    expect(await unavailable.textContent()).toContain('This token ("dash") is a viewer token, read-only');
    expect(await unavailable.textContent()).toContain('hivemesh token create --role operator');
    expect(await cancel.count()).toBe(0);
    // Still there after a few refreshes (nothing redraws it back).
    await page.waitForTimeout(2_500);
    expect(await form.isVisible()).toBe(false);
    expect(await cancel.count()).toBe(0);

    // "Use another token" with an operator token: the form and the cancel button appear.
    await page.locator('#token-upgrade').click();
    await page.locator('#token-input').fill(operatorToken);
    await page.locator('#token-save').click();
    await form.waitFor({ state: 'visible' });
    await cancel.waitFor();
    expect(await unavailable.isVisible()).toBe(false);
    expect(await who.textContent()).toBe('ci · operator');
    await page.locator('#submit-model').fill('llama3.1:8b');
    await page.locator('#submit-prompt').fill('hello');
    await page.locator('#submit-button').click();
    await page.locator('#submit-result').getByText('Submitted task').waitFor();

    // Back to the viewer token through "Change token": the controls go again.
    await page.locator('#token-change').click();
    await page.locator('#token-input').fill(viewerToken);
    await page.locator('#token-save').click();
    await who.getByText('dash · viewer (read-only)').waitFor();
    await form.waitFor({ state: 'hidden' });
    await unavailable.waitFor({ state: 'visible' });
    await page.locator('#task-rows button', { hasText: 'queued-1' }).click();
    await detail.getByText('wait for me').waitFor();
    expect(await cancel.count()).toBe(0);
    expect(fake.cancelRequests).toEqual([]);
    expect(fake.submissions).toHaveLength(1);
  });

  it('offers every control when the node is too old to say what the token may do, and asks for a stronger token on 403', async () => {
    // A node without GET /api/tokens/self answers it 404, as fastify does for an unknown route.
    await page.route(`${baseUrl}/api/tokens/self`, (route) => route.fulfill({
      status: 404, contentType: 'application/json',
      body: JSON.stringify({ error: { code: 'not_found', message: 'no route GET /api/tokens/self; see the API list in the README', details: null } }),
    }));
    fake.addTask({ id: 'queued-1', status: 'queued' });
    await openSignedIn(viewerToken);
    await page.locator('#submit-form').waitFor({ state: 'visible' });
    expect(await page.locator('#token-who').textContent()).toBe('');
    await page.locator('#task-rows button', { hasText: 'queued-1' }).click();
    await page.locator('#task-detail').getByRole('button', { name: 'Cancel task' }).click();
    const problem = page.locator('#token-problem');
    await problem.waitFor({ state: 'visible' });
    expect(await problem.textContent()).toContain('a token with role "viewer" may not cancel');
    await page.locator('#token-dismiss').click();
    expect(await page.locator('#signed-out').isVisible()).toBe(false);
    expect(await page.evaluate(() => window.localStorage.getItem('hivemesh.token'))).toBe(viewerToken);
    expect(await page.locator('#task-detail .inline-error').textContent()).toContain('Not cancelled');
  });

  it('wraps task titles between words on a 375 px phone, cuts only a word too wide for the column, and never scrolls sideways', async () => {
    await page.setViewportSize({ width: 375, height: 812 });
    const titles = [
      'translate the README to French and keep the headings',
      'review pull request 118 about internationalisation',
      'summarise incident',
      'https://example.com/a/very/long/address/without/any/spaces/in/it/at/all',
    ];
    // Ids as long as the daemon's (t_ + time + random), which the list shortens.
    const ids = titles.map((_title, index) => `t_mf3k2q7a1c9e5b7d3f0${index}`);
    titles.forEach((title, index) => fake.addTask({ id: ids[index], title, status: index === 1 ? 'queued' : 'completed', createdAt: Date.now() - index * 1_000,
      waitingFor: index === 1 ? 'waiting for a node with capability review-internationalisation' : null }));
    await openSignedIn();
    const row = (index: number) => page.locator(`#task-rows tr[data-task-id="${ids[index]}"]`);
    await row(3).waitFor();
    const layout = await page.evaluate(() => {
      // A word (a run of letters and digits) split over two lines has line fragments at two
      // heights. Lines may still end after a space, a hyphen or a slash.
      const brokenWords: string[] = [];
      for (const cell of Array.from(document.querySelectorAll('#task-rows td.title-cell'))) {
        const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walker.nextNode(); node !== null; node = walker.nextNode()) {
          for (const match of (node.textContent ?? '').matchAll(/[\p{L}\p{N}]+/gu)) {
            const range = document.createRange();
            range.setStart(node, match.index);
            range.setEnd(node, match.index + match[0].length);
            const lineTops = new Set(Array.from(range.getClientRects()).filter((rect) => rect.width > 0).map((rect) => Math.round(rect.top)));
            if (lineTops.size > 1) brokenWords.push(match[0]);
          }
        }
      }
      const tableBox = document.querySelector('#tasks .table-wrap') as HTMLElement;
      return { brokenWords, pageWidth: document.documentElement.scrollWidth, tableWidth: tableBox.scrollWidth, tableBoxWidth: tableBox.clientWidth };
    });
    expect(layout.brokenWords).toEqual([]);
    expect(layout.pageWidth).toBeLessThanOrEqual(375);
    // The table fits its box too: no title pushes it into a sideways scroll.
    expect(layout.tableWidth).toBeLessThanOrEqual(layout.tableBoxWidth);
    const titleText = (index: number) => row(index).locator('td.title-cell [title]').first();
    const overflows = (index: number) => titleText(index).evaluate((element) => element.scrollWidth > element.clientWidth);
    // Titles of ordinary words wrap onto more lines and show whole.
    for (const index of [0, 2]) {
      expect(await overflows(index)).toBe(false);
      expect(await titleText(index).textContent()).toBe(titles[index]);
    }
    expect(await row(0).locator('td.title-cell').evaluate((cell) => cell.getBoundingClientRect().height)).toBeGreaterThan(40);
    // The long address is cut with an ellipsis in the list; the whole title is its tooltip and in the detail panel.
    expect(await titleText(3).getAttribute('title')).toBe(titles[3]);
    expect(await overflows(3)).toBe(true);
    expect(await titleText(3).evaluate((element) => [getComputedStyle(element).textOverflow, getComputedStyle(element).overflowX])).toEqual(['ellipsis', 'hidden']);
    await row(3).locator('button').click();
    expect(await page.locator('#task-detail dd').first().textContent()).toBe(titles[3]);
    await page.locator('#tasks').screenshot({ path: '/tmp/dashboard-phone-titles.png' });
  });

  it('filters tasks by status and pages with the cursor', async () => {
    for (let index = 0; index < 30; index += 1) fake.addTask({ status: index % 3 === 0 ? 'failed' : 'completed', title: `batch ${index}`, createdAt: Date.now() - index * 1_000 });
    await openSignedIn();
    const rows = page.locator('#task-rows tr');
    await expect.poll(() => rows.count(), { timeout: stepTimeoutMs }).toBe(25);
    await page.locator('#page-next').click();
    await expect.poll(() => rows.count(), { timeout: stepTimeoutMs }).toBe(5);
    expect(await page.locator('#page-label').textContent()).toBe('page 2');
    expect(await page.locator('#page-next').isDisabled()).toBe(true);
    await page.locator('#page-previous').click();
    await expect.poll(() => rows.count(), { timeout: stepTimeoutMs }).toBe(25);
    await page.locator('#task-filter').selectOption('failed');
    await expect.poll(() => rows.count(), { timeout: stepTimeoutMs }).toBe(10);
    expect(await page.locator('#task-rows').textContent()).not.toContain('completed');
  });

  it('is usable from the keyboard, and the 2 s refresh keeps the focus where it was', async () => {
    fake.addTask({ id: 'kb-1', title: 'first', status: 'queued' });
    fake.addTask({ id: 'kb-2', title: 'second', status: 'queued' });
    await openSignedIn();
    const second = page.locator('#task-rows button', { hasText: 'kb-2' });
    await second.focus();
    // Two polls go by; the button is redrawn each time but keeps the focus.
    await page.waitForTimeout(4_500);
    expect(await page.evaluate(() => (document.activeElement as HTMLElement | null)?.dataset.focus)).toBe('task-kb-2');
    await page.keyboard.press('Enter');
    await page.locator('#task-detail h3', { hasText: 'kb-2' }).waitFor();
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('task-detail');
    // Tab reaches the cancel button in the panel, Enter presses it.
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Cancel task');
    await page.keyboard.press('Enter');
    await expect.poll(() => fake.cancelRequests, { timeout: stepTimeoutMs }).toEqual(['kb-2']);
  });

  it('stops polling while the tab is hidden and resumes when it is shown', async () => {
    await openSignedIn();
    let statusRequests = 0;
    page.on('request', (request) => {
      if (request.url().endsWith('/api/status/cluster')) statusRequests += 1;
    });
    const setHidden = (hidden: boolean) => page.evaluate((value) => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => value });
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (value ? 'hidden' : 'visible') });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await setHidden(true);
    await page.locator('#freshness', { hasText: 'paused' }).waitFor();
    // A poll already under way may finish; none starts after it.
    await page.waitForTimeout(500);
    const before = statusRequests;
    await page.waitForTimeout(4_500);
    expect(statusRequests).toBe(before);
    await setHidden(false);
    await expect.poll(() => statusRequests, { timeout: stepTimeoutMs }).toBeGreaterThan(before);
    await page.locator('#freshness', { hasText: 'updated' }).waitFor();
  });

  it('says in plain words when the node stops answering', async () => {
    await openSignedIn();
    await page.locator('#events-state', { hasText: 'live' }).waitFor();
    await fake.stop();
    const banner = page.locator('#connection');
    await banner.waitFor({ state: 'visible' });
    expect(await banner.textContent()).toMatch(/cannot reach the node at 127\.0\.0\.1:\d+: is the hivemesh daemon still running\? The page keeps trying\. The figures below are from the last successful update\./);
    await page.locator('#events-state', { hasText: 'reconnecting in' }).waitFor();
  });

  it('works under a strict Content-Security-Policy (no inline script or style)', async () => {
    const policy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
    await page.route(`${baseUrl}/`, async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': policy } });
    });
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (event) => {
        (window as unknown as { violations: string[] }).violations ??= [];
        (window as unknown as { violations: string[] }).violations.push(`${event.violatedDirective} ${event.blockedURI}`);
      });
    });
    fake.addTask({ id: 'csp-1', status: 'running', attempt: 1, assignedNode: '12D3KooWSelfNode000000000000000000000000000001' });
    await openSignedIn();
    await page.locator('#task-rows button', { hasText: 'csp-1' }).click();
    await expect.poll(() => fake.streamsFor('csp-1'), { timeout: stepTimeoutMs }).toBe(1);
    const width = await page.locator('#node-list [role=meter][aria-label=VRAM] .bar-fill').first().evaluate((fill) => (fill as HTMLElement).style.width);
    expect(width).toBe('81.3%');
    expect(await page.evaluate(() => (window as unknown as { violations?: string[] }).violations ?? [])).toEqual([]);
  });

  it('looks right on a laptop and a phone (screenshots in /tmp)', async () => {
    fake.addTask({ id: 'gen-7', title: 'translate the README to French', status: 'running', attempt: 1, assignedNode: '12D3KooWSelfNode000000000000000000000000000001', startedAt: Date.now() - 4_000 });
    fake.addTask({ id: 'gen-6', title: 'review pull request 118', status: 'queued', capability: 'review', model: null, waitingFor: 'waiting for a node with capability review' });
    fake.addTask({ id: 'gen-5', title: 'summarise incident', status: 'failed', attempt: 3, error: 'Ollama returned 500 three times' });
    fake.addTask({ id: 'gen-4', title: 'haiku', status: 'completed', attempt: 1, output: 'Gossip in the mesh' });
    await openSignedIn();
    await page.locator('#task-rows button', { hasText: 'gen-7' }).click();
    await expect.poll(() => fake.streamsFor('gen-7'), { timeout: stepTimeoutMs }).toBe(1);
    fake.emitTaskEvent('gen-7', { type: 'output', taskId: 'gen-7', attempt: 1, sequence: 0, text: 'Hivemesh transforme les GPU de votre réseau local en un seul ensemble d\'agents…' });
    await page.locator('#task-detail pre.output').getByText('Hivemesh transforme').waitFor();
    await page.screenshot({ path: '/tmp/dashboard.png', fullPage: true });
    await page.setViewportSize({ width: 390, height: 844 });
    await page.screenshot({ path: '/tmp/dashboard-phone.png', fullPage: true });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: '/tmp/dashboard-phone-top.png' });
    await page.locator('#tasks').screenshot({ path: '/tmp/dashboard-phone-tasks.png' });
    // Nothing is wider than a phone's screen (tables scroll inside their own box).
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    // Dark scheme.
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: '/tmp/dashboard-dark.png', fullPage: false });
  });
});
