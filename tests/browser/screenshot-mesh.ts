// Screenshots of the dashboard on a real three-node mesh (daemons and Ollama stand-ins on
// 127.0.0.1), before and after one node is killed: for looking at the page with real
// data, not a test. Run by hand: node tests/browser/screenshot-mesh.ts [output-dir]
// (default /tmp); it writes mesh-running.png and mesh-node-killed.png.
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startTaskCluster, submit, waitModelsGossiped } from '../loopback/tasks-helpers.ts';
import { ProcessGroup } from '../support/processes.ts';

const outputDir = process.argv[2] ?? '/tmp';
const group = new ProcessGroup();
try {
  const cluster = await startTaskCluster(group, [
    { name: 'mesh-a', standin: { models: ['llama3.2:3b'], tokensPerSecond: 30, responseTokens: 400 } },
    { name: 'mesh-b', standin: { models: ['llama3.2:3b', 'qwen2.5-coder:7b'], tokensPerSecond: 20, responseTokens: 400 } },
    { name: 'mesh-c', standin: { models: ['mistral:7b'], tokensPerSecond: 15, responseTokens: 400 } },
  ]);
  await waitModelsGossiped(cluster);
  const first = cluster.daemons[0]!;
  const task = await submit(first, { model: 'qwen2.5-coder:7b', prompt: 'write a function', title: 'code task' });
  await submit(first, { model: 'mistral:7b', prompt: 'summarise the incident', title: 'summary task' });
  await submit(first, { model: 'nonexistent:1b', prompt: 'no node has this model', title: 'unplaceable' });
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.addInitScript((token) => window.localStorage.setItem('hivemesh.token', token), first.adminToken);
    const page = await context.newPage();
    page.on('pageerror', (error) => console.error(`page error: ${error.message}`));
    await page.goto(`${first.apiUrl}/#task=${task.id}`);
    await page.waitForTimeout(2_500);
    await page.screenshot({ path: join(outputDir, 'mesh-running.png'), fullPage: true });
    cluster.daemons[2]!.kill('SIGKILL');
    // Past the failure detector's dead-after time, plus a refresh.
    await page.waitForTimeout(7_000);
    await page.screenshot({ path: join(outputDir, 'mesh-node-killed.png'), fullPage: true });
    console.log(`screenshots in ${outputDir}: mesh-running.png, mesh-node-killed.png`);
  } finally {
    await browser.close();
  }
} finally {
  await group.stopAll();
}
