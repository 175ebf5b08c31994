// The install script, without touching this machine: its dry run, and real runs of a copy of
// it in a scratch checkout whose unit file and CLI link go under a scratch root
// (HIVEMESH_INSTALL_ROOT), with stand-ins on PATH for id, getent, groupadd, useradd, chown,
// systemctl and npm that record their calls. Covers option errors, copy-pastable dry-run
// lines, systemd quoting of paths, the hivemesh group, upgrades (fresh tree swapped in, data
// kept, service restarted) and the guard on an existing cluster key.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const script = fileURLToPath(new URL('./install-node.sh', import.meta.url));

// Each stand-in appends one line per call: its name and arguments, tab-separated.
const stubs: Record<string, string> = {
  id: 'if [ "$*" = -u ]; then echo 0; exit 0; fi; exit 1',
  getent: 'grep "^$2:" "$STUB_STATE/$1" 2>/dev/null || exit 2',
  groupadd: 'echo "${!#}:x:990:" >> "$STUB_STATE/group"',
  useradd: 'echo "${!#}:x:990:990::/:/usr/sbin/nologin" >> "$STUB_STATE/passwd"',
  chown: 'exit 0',
  systemctl: 'if [ "$1" = is-active ]; then echo "${STUB_SERVICE_STATE:-inactive}"; [ "${STUB_SERVICE_STATE:-}" = active ]; exit; fi',
  npm: '[ -z "${STUB_NPM_FAIL:-}" ] || { echo "npm ERR! stand-in failure" >&2; exit 1; }; mkdir -p node_modules && echo "$PWD" > node_modules/.installed-in',
};

interface Scratch {
  base: string;
  checkout: string;
  root: string;
  state: string;
  prefix: string;
  dataDir: string;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Every stand-in call: [command, ...arguments]. */
  calls: string[][];
}

const scratches: string[] = [];
afterEach(() => {
  for (const base of scratches.splice(0)) rmSync(base, { recursive: true, force: true });
});

/** A hivemesh checkout (a copy of the script and a few files), a scratch root and stand-ins. */
function makeScratch(): Scratch {
  const base = mkdtempSync(join(tmpdir(), 'hivemesh-install-'));
  scratches.push(base);
  const checkout = join(base, 'checkout');
  const files: Record<string, string> = {
    'package.json': '{\n  "name": "hivemesh",\n  "version": "0.0.1"\n}\n',
    'package-lock.json': '{}\n',
    'bin/hivemesh': '#!/bin/sh\necho hivemesh\n',
    'daemon/old.ts': 'export const version = 1;\n',
  };
  for (const [path, content] of Object.entries(files)) writeInto(checkout, path, content);
  chmodSync(join(checkout, 'bin/hivemesh'), 0o755);
  mkdirSync(join(checkout, 'scripts'));
  copyFileSync(script, join(checkout, 'scripts/install-node.sh'));
  const stubDir = join(base, 'stubs');
  mkdirSync(stubDir);
  for (const [name, body] of Object.entries(stubs)) {
    const path = join(stubDir, name);
    writeFileSync(path, `#!/usr/bin/env bash\nprintf '%s\\t' ${name} "$@" >> "$STUB_LOG"; echo >> "$STUB_LOG"\n${body}\n`);
    chmodSync(path, 0o755);
  }
  const state = join(base, 'state');
  mkdirSync(state);
  return {
    base, checkout, state,
    root: join(base, 'root'),
    // Spaces, % and $ in both paths: systemd quoting is exercised by every run.
    prefix: join(base, 'opt dir', 'hive%code$x'),
    dataDir: join(base, 'var lib', 'hive data'),
  };
}

function writeInto(directory: string, path: string, content: string): void {
  mkdirSync(dirname(join(directory, path)), { recursive: true });
  writeFileSync(join(directory, path), content);
}

function install(scratch: Scratch, args: string[], env: Record<string, string> = {}): Run {
  const log = join(scratch.state, 'calls.log');
  writeFileSync(log, '');
  const result = spawnSync('bash', [join(scratch.checkout, 'scripts/install-node.sh'), '--prefix', scratch.prefix, '--data-dir', scratch.dataDir, ...args], {
    encoding: 'utf8',
    env: {
      ...process.env,
      PATH: `${join(scratch.base, 'stubs')}:${process.env.PATH ?? ''}`,
      HIVEMESH_INSTALL_ROOT: scratch.root,
      STUB_LOG: log,
      STUB_STATE: scratch.state,
      ...env,
    },
  });
  const calls = readFileSync(log, 'utf8').split('\n').filter((line) => line !== '').map((line) => line.replace(/\t$/, '').split('\t'));
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, calls };
}

function callsOf(run: Run, command: string): string[] {
  return run.calls.filter((call) => call[0] === command).map((call) => call.slice(1).join(' '));
}

/** The words bash reads from a dry-run line (after "+ "), as a shell would run them. */
function wordsOf(line: string): string[] {
  const output = execFileSync('bash', ['-c', `words() { printf '%s\\0' "$@"; }; words ${line.slice(2)}`], { encoding: 'utf8' });
  return output.split('\0').slice(0, -1);
}

const unitPath = (scratch: Scratch): string => join(scratch.root, 'etc/systemd/system/hivemesh.service');
const keyText = (hex: string): string => `/key/swarm/psk/1.0.0/\n/base16/\n${hex.repeat(64)}\n`;

describe('install-node.sh --dry-run', () => {
  it('prints the unit with systemd-quoted arguments and says nothing was changed', () => {
    const existed = existsSync('/etc/systemd/system/hivemesh.service');
    const output = execFileSync('bash', [script, '--dry-run', '--name', 'gpu box "2" 100% $HOME'], { encoding: 'utf8' });
    expect(output).toContain('ExecStart="/opt/hivemesh/bin/hivemesh" start "--name" "gpu box \\"2\\" 100%% $$HOME"');
    expect(output).toMatch(/dry run: nothing was changed/);
    expect(output).not.toMatch(/is installed and/);
    expect(existsSync('/etc/systemd/system/hivemesh.service')).toBe(existed);
  });

  it('prints commands a shell reads back as the same words', () => {
    const scratch = makeScratch();
    const run = install(scratch, ['--dry-run', '--name', "it's a box"]);
    expect(run.status).toBe(0);
    const lines = run.stdout.split('\n');
    const useradd = lines.find((line) => line.startsWith('+ useradd '));
    expect(useradd).toBeDefined();
    const words = wordsOf(useradd ?? '');
    expect(words[words.indexOf('--home-dir') + 1]).toBe(scratch.dataDir);
    const chown = lines.find((line) => line.startsWith('+ chown '));
    expect(wordsOf(chown ?? '')).toEqual(['chown', '-R', 'hivemesh:hivemesh', scratch.dataDir]);
    const link = lines.find((line) => line.startsWith('+ ln '));
    expect(wordsOf(link ?? '')).toEqual(['ln', '-sfn', `${scratch.prefix}/bin/hivemesh`, join(scratch.root, 'usr/local/bin/hivemesh')]);
    // A dry run changes nothing, under the scratch root or anywhere else.
    expect(existsSync(scratch.root)).toBe(false);
    expect(existsSync(dirname(scratch.prefix))).toBe(false);
    expect(existsSync(scratch.dataDir)).toBe(false);
    expect(callsOf(run, 'groupadd')).toEqual([]);
    expect(callsOf(run, 'systemctl')).toEqual(['is-active hivemesh']);
  });
});

describe('install-node.sh options', () => {
  const valued = ['--secret-file', '--name', '--ollama-url', '--bootstrap', '--prefix', '--data-dir'];

  it.each(valued)('%s without a value: a clear message and the usage, exit 2', (option) => {
    const result = spawnSync('bash', [script, '--dry-run', option], { encoding: 'utf8' });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`install-node.sh: ${option} needs `);
    expect(result.stderr).toContain('usage: sudo scripts/install-node.sh');
    expect(result.stderr).not.toMatch(/line \d+/);
    expect(result.stdout).toBe('');
  });

  it('an option where a value should be is a missing value, not the value', () => {
    // Through the stand-ins: were --dry-run taken as the name, this would be a real install.
    const run = install(makeScratch(), ['--name', '--dry-run']);
    expect(run.status).toBe(2);
    expect(run.stderr).toContain('--name needs a value (the node name), not the option --dry-run');
    expect(run.calls).toEqual([]);
  });

  it('--help describes the cluster-key guard and upgrades', () => {
    const output = execFileSync('bash', [script, '--help'], { encoding: 'utf8' });
    expect(output).toContain('--replace-cluster-key');
    expect(output).toMatch(/Running it again upgrades/);
  });
});

describe('install-node.sh paths in the unit', () => {
  it('quotes the data dir and prefix for systemd: Environment, ExecStart, ReadWritePaths', () => {
    const scratch = makeScratch();
    const run = install(scratch, []);
    expect(run.status, run.stderr).toBe(0);
    const unit = readFileSync(unitPath(scratch), 'utf8');
    const dataDir = scratch.dataDir.replaceAll('%', '%%');
    expect(unit).toContain(`Environment="HIVEMESH_DATA_DIR=${dataDir}"\n`);
    expect(unit).toContain(`ReadWritePaths="${dataDir}"\n`);
    // The executable's path is not subject to $ expansion in systemd, only to specifiers.
    expect(unit).toContain(`ExecStart="${scratch.prefix.replaceAll('%', '%%')}/bin/hivemesh" start\n`);
  });

  const systemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;
  it.skipIf(!systemdAnalyze)('systemd itself accepts the unit and finds the executable (systemd-analyze verify)', () => {
    const scratch = makeScratch();
    expect(install(scratch, ['--name', 'gpu box 2']).status).toBe(0);
    const verify = spawnSync('systemd-analyze', ['verify', unitPath(scratch)], { encoding: 'utf8' });
    expect(verify.stderr).toBe('');
    expect(verify.status).toBe(0);
  });

  it.each([
    ['--prefix', '/opt/hive"mesh'],
    ['--prefix', "/opt/hive's"],
    ['--data-dir', '/var/lib/hive\\data'],
    ['--data-dir', '/var/lib/hive\ndata'],
  ])('refuses %s %j, which systemd cannot take', (option, path) => {
    const result = spawnSync('bash', [script, '--dry-run', option, path], { encoding: 'utf8' });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`install-node.sh: ${option} `);
    expect(result.stderr).toContain('which systemd cannot take in a unit');
  });
});

describe('install-node.sh user and group', () => {
  it('creates the hivemesh group before a user in it', () => {
    const scratch = makeScratch();
    const run = install(scratch, []);
    expect(run.status, run.stderr).toBe(0);
    const order = run.calls.map((call) => call[0]).filter((command) => command === 'groupadd' || command === 'useradd');
    expect(order).toEqual(['groupadd', 'useradd']);
    expect(callsOf(run, 'groupadd')).toEqual(['--system hivemesh']);
    expect(callsOf(run, 'useradd')[0]).toMatch(/^--system --gid hivemesh --home-dir .* hivemesh$/);
    expect(callsOf(run, 'chown')).toEqual([`-R hivemesh:hivemesh ${scratch.dataDir}`]);
    expect(readFileSync(unitPath(scratch), 'utf8')).toContain('\nGroup=hivemesh\n');
  });

  it('uses an existing group and user as they are', () => {
    const scratch = makeScratch();
    writeFileSync(join(scratch.state, 'group'), 'hivemesh:x:990:\n');
    writeFileSync(join(scratch.state, 'passwd'), 'hivemesh:x:990:990::/:/usr/sbin/nologin\n');
    const run = install(scratch, []);
    expect(run.status, run.stderr).toBe(0);
    expect(callsOf(run, 'groupadd')).toEqual([]);
    expect(callsOf(run, 'useradd')).toEqual([]);
    expect(run.stdout).toContain('group hivemesh exists');
    expect(run.stdout).toContain('user hivemesh exists');
  });

  it('adds the missing group for a user made without one, and a user to an existing group', () => {
    const userOnly = makeScratch();
    writeFileSync(join(userOnly.state, 'passwd'), 'hivemesh:x:990:100::/:/usr/sbin/nologin\n');
    const first = install(userOnly, []);
    expect(first.status, first.stderr).toBe(0);
    expect(callsOf(first, 'groupadd')).toEqual(['--system hivemesh']);
    expect(callsOf(first, 'useradd')).toEqual([]);

    const groupOnly = makeScratch();
    writeFileSync(join(groupOnly.state, 'group'), 'hivemesh:x:990:\n');
    const second = install(groupOnly, []);
    expect(second.status, second.stderr).toBe(0);
    expect(callsOf(second, 'groupadd')).toEqual([]);
    expect(callsOf(second, 'useradd')[0]).toContain('--gid hivemesh');
  });
});

describe('install-node.sh service', () => {
  it('starts a service that was not running', () => {
    const scratch = makeScratch();
    const run = install(scratch, [], { STUB_SERVICE_STATE: 'inactive' });
    expect(run.status, run.stderr).toBe(0);
    expect(callsOf(run, 'systemctl')).toEqual(['daemon-reload', 'enable hivemesh', 'is-active hivemesh', 'start hivemesh']);
    expect(run.stdout).toContain('hivemesh is installed and started');
  });

  it('restarts a running service, so an upgrade runs the new code, and says so', () => {
    const scratch = makeScratch();
    const run = install(scratch, [], { STUB_SERVICE_STATE: 'active' });
    expect(run.status, run.stderr).toBe(0);
    expect(callsOf(run, 'systemctl')).toEqual(['daemon-reload', 'enable hivemesh', 'is-active hivemesh', 'restart hivemesh']);
    expect(run.stdout).toContain('hivemesh was running: restarting it so the new code takes effect');
    expect(run.stdout).toContain('hivemesh is installed and restarted');
  });
});

describe('install-node.sh upgrade of the code', () => {
  it('replaces the code whole: files the new version dropped are gone, the data dir is kept', () => {
    const scratch = makeScratch();
    expect(install(scratch, []).status).toBe(0);
    expect(existsSync(join(scratch.prefix, 'daemon/old.ts'))).toBe(true);
    writeFileSync(join(scratch.dataDir, 'raft.log'), 'entries');
    writeFileSync(join(scratch.prefix, 'leftover-by-hand'), 'x');

    rmSync(join(scratch.checkout, 'daemon/old.ts'));
    writeInto(scratch.checkout, 'daemon/new.ts', 'export const version = 2;\n');
    const upgrade = install(scratch, [], { STUB_SERVICE_STATE: 'active' });
    expect(upgrade.status, upgrade.stderr).toBe(0);

    expect(existsSync(join(scratch.prefix, 'daemon/new.ts'))).toBe(true);
    expect(existsSync(join(scratch.prefix, 'daemon/old.ts'))).toBe(false);
    expect(existsSync(join(scratch.prefix, 'leftover-by-hand'))).toBe(false);
    expect(readFileSync(join(scratch.dataDir, 'raft.log'), 'utf8')).toBe('entries');
    // npm ran in the fresh tree, which then took the prefix's place; nothing is left beside it.
    const installedIn = readFileSync(join(scratch.prefix, 'node_modules/.installed-in'), 'utf8').trim();
    expect(installedIn).not.toBe(scratch.prefix);
    expect(dirname(installedIn)).toBe(dirname(scratch.prefix));
    expect(readdirSync(dirname(scratch.prefix))).toEqual(['hive%code$x']);
    expect(statSync(scratch.prefix).mode & 0o777).toBe(0o755);
    expect(existsSync(join(scratch.root, 'usr/local/bin/hivemesh'))).toBe(true);
  });

  it('leaves the installed code as it was when building the new tree fails', () => {
    const scratch = makeScratch();
    expect(install(scratch, []).status).toBe(0);
    rmSync(join(scratch.checkout, 'daemon/old.ts'));
    const failed = install(scratch, [], { STUB_NPM_FAIL: '1' });
    expect(failed.status).not.toBe(0);
    expect(existsSync(join(scratch.prefix, 'daemon/old.ts'))).toBe(true);
    expect(readdirSync(dirname(scratch.prefix))).toEqual(['hive%code$x']);
    expect(callsOf(failed, 'systemctl')).toEqual([]);
  });

  it.each([
    ['inside the prefix', (scratch: Scratch) => join(scratch.prefix, 'data'), 'is inside the code prefix'],
    ['the prefix itself', (scratch: Scratch) => scratch.prefix, 'is inside the code prefix'],
    ['around the prefix', (scratch: Scratch) => dirname(scratch.prefix), 'is inside the data dir'],
  ])('refuses a data dir %s, before changing anything', (_where, dataDirOf, message) => {
    const scratch = makeScratch();
    const run = install(scratch, ['--data-dir', dataDirOf(scratch)]);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain(message);
    expect(run.calls.filter((call) => call[0] !== 'id' && call[0] !== 'getent')).toEqual([]);
    expect(existsSync(dirname(scratch.prefix))).toBe(false);
  });

  it('refuses to replace a prefix that holds something other than hivemesh', () => {
    const scratch = makeScratch();
    writeInto(scratch.prefix, 'precious.txt', 'not ours');
    const run = install(scratch, []);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('does not hold a hivemesh install');
    expect(readFileSync(join(scratch.prefix, 'precious.txt'), 'utf8')).toBe('not ours');
    expect(run.calls.filter((call) => call[0] !== 'id' && call[0] !== 'getent')).toEqual([]);
  });
});

describe('install-node.sh cluster key', () => {
  function withKey(hex: string): Scratch {
    const scratch = makeScratch();
    writeInto(scratch.dataDir, 'cluster.key', keyText(hex));
    return scratch;
  }

  it('copies the key given with --secret-file to a node without one, readable by its owner only', () => {
    const scratch = makeScratch();
    writeFileSync(join(scratch.base, 'cluster.key'), keyText('a'));
    const run = install(scratch, ['--secret-file', join(scratch.base, 'cluster.key')]);
    expect(run.status, run.stderr).toBe(0);
    expect(readFileSync(join(scratch.dataDir, 'cluster.key'), 'utf8')).toBe(keyText('a'));
    expect(statSync(join(scratch.dataDir, 'cluster.key')).mode & 0o777).toBe(0o600);
  });

  it('refuses a different key than the node has, changing nothing', () => {
    const scratch = withKey('a');
    writeFileSync(join(scratch.base, 'other.key'), keyText('b'));
    const run = install(scratch, ['--secret-file', join(scratch.base, 'other.key')]);
    expect(run.status).toBe(1);
    expect(run.stderr).toContain('already holds a different cluster key');
    expect(run.stderr).toContain('--replace-cluster-key');
    expect(readFileSync(join(scratch.dataDir, 'cluster.key'), 'utf8')).toBe(keyText('a'));
    expect(run.calls.filter((call) => call[0] !== 'id' && call[0] !== 'getent')).toEqual([]);
    expect(existsSync(scratch.prefix)).toBe(false);
  });

  it('takes the same key (CRLF line endings too) and says it is unchanged', () => {
    const scratch = withKey('a');
    writeFileSync(join(scratch.base, 'same.key'), keyText('a').replaceAll('\n', '\r\n'));
    const run = install(scratch, ['--secret-file', join(scratch.base, 'same.key')]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain('cluster key unchanged');
    expect(readFileSync(join(scratch.dataDir, 'cluster.key'), 'utf8')).toBe(keyText('a'));
  });

  it('replaces a different key with --replace-cluster-key, keeping the old one aside', () => {
    const scratch = withKey('a');
    writeFileSync(join(scratch.base, 'other.key'), keyText('b'));
    const run = install(scratch, ['--secret-file', join(scratch.base, 'other.key'), '--replace-cluster-key']);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toContain('replacing the cluster key');
    expect(readFileSync(join(scratch.dataDir, 'cluster.key'), 'utf8')).toBe(keyText('b'));
    expect(readFileSync(join(scratch.dataDir, 'cluster.key.previous'), 'utf8')).toBe(keyText('a'));
    expect(statSync(join(scratch.dataDir, 'cluster.key')).mode & 0o777).toBe(0o600);
  });

  it('--replace-cluster-key alone is a usage error', () => {
    const result = spawnSync('bash', [script, '--dry-run', '--replace-cluster-key'], { encoding: 'utf8' });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain('--replace-cluster-key needs --secret-file');
  });
});
