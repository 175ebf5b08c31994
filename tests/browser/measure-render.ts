// Measures what the dashboard costs the browser: time from navigation to the first
// status on screen, and main-thread script and layout time per 2 s refresh with a
// cluster of clusterNodesMax nodes and a full page of tasks. Run by hand:
//   node tests/browser/measure-render.ts
import { chromium } from 'playwright-core';
import { clusterNodesMax } from '../../protocol/limits.ts';
import { FakeCluster, adminToken, sampleAgents } from './fake-cluster.ts';

const fake = new FakeCluster();
const services = fake.services();
const template = sampleAgents(Date.now()).nodes;
fake.services = () => ({
  ...services,
  agentsStatus: () => ({
    nodes: Array.from({ length: clusterNodesMax }, (_, index) => ({
      ...template[index % template.length]!,
      id: `12D3KooWNode${String(index).padStart(30, '0')}`,
      name: `gpu-${index}`,
      self: index === 0,
    })),
  }),
});
for (let index = 0; index < 100; index += 1) fake.addTask({ title: `task ${index}`, status: index % 2 === 0 ? 'completed' : 'queued' });
const baseUrl = await fake.start();
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--headless', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript((token) => window.localStorage.setItem('hivemesh.token', token), adminToken);
  const page = await context.newPage();
  const started = Date.now();
  await page.goto(baseUrl);
  await page.locator('#node-list article').nth(clusterNodesMax - 1).waitFor({ timeout: 20_000 });
  const firstRenderMs = Date.now() - started;
  const session = await context.newCDPSession(page);
  await session.send('Performance.enable');
  const metrics = async () => Object.fromEntries(((await session.send('Performance.getMetrics')).metrics).map((metric) => [metric.name, metric.value]));
  const before = await metrics();
  const windowMs = 20_000;
  await page.waitForTimeout(windowMs);
  const after = await metrics();
  const refreshes = windowMs / 2_000;
  const perRefresh = (name: string) => (((after[name] ?? 0) - (before[name] ?? 0)) * 1000 / refreshes).toFixed(1);
  console.log(JSON.stringify({
    nodes: clusterNodesMax, tasksOnPage: 25, firstStatusOnScreenMs: firstRenderMs,
    scriptMsPerRefresh: perRefresh('ScriptDuration'), layoutMsPerRefresh: perRefresh('LayoutDuration'), styleMsPerRefresh: perRefresh('RecalcStyleDuration'),
    domNodes: after.Nodes, jsHeapUsedMiB: ((after.JSHeapUsedSize ?? 0) / 1024 / 1024).toFixed(1),
  }));
} finally {
  await browser.close();
  await fake.stop();
}
