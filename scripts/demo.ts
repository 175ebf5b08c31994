// `npm run demo`: a three-node hivemesh on this machine, for trying hivemesh where no
// Ollama runs. Each node gets its own Ollama stand-in (tests/ollama-standin: an
// Ollama-compatible test server that produces deterministic text, not a model) with
// different models and speeds. Data lives in .hivemesh-demo/; Ctrl-C stops everything.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startStandin, type Standin } from '../tests/ollama-standin/server.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const demoDir = join(root, '.hivemesh-demo');
const basePort = Number(process.env.HIVEMESH_DEMO_BASE_PORT ?? 7420);

const nodes = [
  { name: 'demo-1', models: ['llama3.2:3b', 'nomic-embed-text'], tokensPerSecond: 60 },
  { name: 'demo-2', models: ['llama3.2:3b', 'qwen2.5-coder:7b'], tokensPerSecond: 35 },
  { name: 'demo-3', models: ['qwen2.5-coder:7b', 'mistral:7b'], tokensPerSecond: 20 },
];

const children: ChildProcess[] = [];
const standins: Standin[] = [];

async function waitFor<T>(what: string, probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe().catch(() => null);
    if (value !== null) return value;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function getJson(url: string, token?: string): Promise<unknown> {
  const response = await fetch(url, { headers: token === undefined ? {} : { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(2_000) });
  if (!response.ok) return null;
  return response.json();
}

function startNode(index: number, standinUrl: string, bootstrap: string | null): ChildProcess {
  const node = nodes[index]!;
  const dataDir = join(demoDir, node.name);
  mkdirSync(dataDir, { recursive: true });
  const args = [
    join(root, 'daemon', 'cli', 'main.ts'), 'start',
    '--name', node.name,
    '--data-dir', dataDir,
    '--api-host', '127.0.0.1', '--api-port', String(basePort + index * 10),
    '--p2p-host', '127.0.0.1', '--p2p-port', String(basePort + index * 10 + 1),
    '--ollama-url', standinUrl,
    '--no-mdns',
  ];
  if (index > 0) args.push('--secret-file', join(demoDir, nodes[0]!.name, 'cluster.key'));
  if (bootstrap !== null) args.push('--bootstrap', bootstrap);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { MALLOC_ARENA_MAX: '2', ...process.env, HIVEMESH_LOG: process.env.HIVEMESH_LOG ?? 'warn' } });
  const prefix = `[${node.name}] `;
  child.stdout?.on('data', (chunk: Buffer) => process.stdout.write(chunk.toString().replace(/^(?=.)/gm, prefix)));
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(chunk.toString().replace(/^(?=.)/gm, prefix)));
  child.on('exit', (code, signal) => {
    if (!stopping) {
      process.stderr.write(`${prefix}exited (${signal ?? code}); stopping the demo\n`);
      void stop(1);
    }
  });
  children.push(child);
  return child;
}

let stopping = false;
/**
 * Stops the nodes gracefully. Ctrl-C in a terminal reaches every process of the group, the
 * nodes included: they are given a moment to stop on that signal alone (a second signal
 * makes a daemon stop at once); a SIGTERM sent to the demo alone is passed on at once.
 */
async function stop(code: number, signal: 'SIGINT' | 'SIGTERM' | null = null): Promise<void> {
  if (stopping) return;
  stopping = true;
  const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;
  if (signal === 'SIGINT') {
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && !children.every(exited)) await new Promise((resolve) => setTimeout(resolve, 50));
  }
  for (const child of children) if (!exited(child)) child.kill('SIGTERM');
  await Promise.all(children.map((child) => new Promise((resolve) => (exited(child) ? resolve(null) : child.once('exit', resolve)))));
  await Promise.all(standins.map((standin) => standin.close()));
  process.exit(code);
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void stop(0, 'SIGINT'));
  process.on('SIGTERM', () => void stop(0, 'SIGTERM'));
  mkdirSync(demoDir, { recursive: true });
  process.stdout.write(`hivemesh demo: three nodes on 127.0.0.1, each with an Ollama stand-in (a test server, not a model)\n`);
  for (const node of nodes) {
    standins.push(await startStandin({ host: '127.0.0.1', port: 0, models: node.models, tokensPerSecond: node.tokensPerSecond, coldLoadMs: 1_500, vramBytes: 8 * 1024 ** 3 }));
  }
  startNode(0, standins[0]!.url, null);
  const firstApi = `http://127.0.0.1:${basePort}`;
  const tokenPath = join(demoDir, nodes[0]!.name, 'admin.token');
  await waitFor('demo-1 to start', async () => (existsSync(tokenPath) && (await getJson(`${firstApi}/health/live`)) !== null ? true : null), 30_000);
  const token = readFileSync(tokenPath, 'utf8').trim();
  const status = await waitFor('demo-1 status', async () => (await getJson(`${firstApi}/api/status/cluster`, token)) as { listenAddresses: string[] } | null, 10_000);
  const bootstrap = status.listenAddresses.find((address) => address.includes('/127.0.0.1/')) ?? status.listenAddresses[0]!;
  startNode(1, standins[1]!.url, bootstrap);
  startNode(2, standins[2]!.url, bootstrap);
  await waitFor('all three nodes to be ready', async () => {
    for (let index = 0; index < nodes.length; index += 1) {
      if ((await getJson(`http://127.0.0.1:${basePort + index * 10}/health/ready`)) === null) return null;
    }
    return true;
  }, 60_000);
  process.stdout.write([
    '',
    'The demo mesh is up.',
    ...nodes.map((node, index) => `  ${node.name}: dashboard http://127.0.0.1:${basePort + index * 10}/   (models ${node.models.join(', ')})`),
    `  admin token: ${token}`,
    '',
    'Try, in another terminal:',
    `  export HIVEMESH_URL=${firstApi} HIVEMESH_TOKEN=${token}`,
    '  ./bin/hivemesh nodes',
    '  ./bin/hivemesh submit --model llama3.2:3b --follow "Write a haiku about routers"',
    '',
    'Ctrl-C stops the demo (data stays in .hivemesh-demo/; delete it to start afresh).',
    '',
  ].join('\n'));
}

main().catch((error: unknown) => {
  process.stderr.write(`demo failed: ${(error as Error).message}\n`);
  void stop(1);
});
