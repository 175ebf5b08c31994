// Configuration: flag over environment over config file over default, the config file's
// keys (the flags in camelCase), what a bad value says, and bounds that match the limits
// the cluster really applies.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirsRemovedAfterEach } from '../tests/support/temp-dirs.ts';
import * as limits from '../protocol/limits.ts';
import { ConfigError, keepFinishedTasksMsMin, loadConfig } from './config.ts';

const freshDir = tempDirsRemovedAfterEach('config');
function configFile(content: unknown): string {
  const path = join(freshDir(), 'config.json');
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

describe('loadConfig', () => {
  it('takes a flag over the environment over the config file over the default', () => {
    const file = configFile({ apiPort: 7001, concurrency: 3, name: 'from-file', voters: 5, mdns: false });
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(loadConfig(['--config', file], home)).toMatchObject({ apiPort: 7001, concurrency: 3, name: 'from-file', votersTarget: 5, mdns: false });
    const env = { ...home, HIVEMESH_API_PORT: '7002', HIVEMESH_CONCURRENCY: '4' };
    expect(loadConfig(['--config', file], env)).toMatchObject({ apiPort: 7002, concurrency: 4, name: 'from-file' });
    expect(loadConfig(['--config', file, '--api-port', '7003'], env)).toMatchObject({ apiPort: 7003, concurrency: 4 });
    expect(loadConfig([], home)).toMatchObject({ apiPort: 7420, p2pPort: 7421, concurrency: 2, mdns: true });
  });

  it('preloads by default; --no-preload, HIVEMESH_PRELOAD=false or "preload": false turn it off', () => {
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(loadConfig([], home).preload).toBe(true);
    expect(loadConfig(['--no-preload'], home).preload).toBe(false);
    expect(loadConfig([], { ...home, HIVEMESH_PRELOAD: 'false' }).preload).toBe(false);
    expect(loadConfig(['--config', configFile({ preload: false })], home).preload).toBe(false);
    expect(() => loadConfig([], { ...home, HIVEMESH_PRELOAD: 'sometimes' })).toThrow(/HIVEMESH_PRELOAD/);
  });

  it('says what is wrong with a bad value, key or file', () => {
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(() => loadConfig(['--api-port', '70000'], home)).toThrow(ConfigError);
    expect(() => loadConfig(['--api-port', '70000'], home)).toThrow(/api-port/);
    expect(() => loadConfig(['--frobnicate'], home)).toThrow(/hivemesh start --help/);
    expect(() => loadConfig(['--config', configFile({ colour: 'red' })], home)).toThrow(/unknown setting "colour"; known settings: .*apiPort/);
    expect(() => loadConfig(['--config', configFile({ voters: 3, votersTarget: 3 })], home)).toThrow(/"voters" or "votersTarget", not both/);
    expect(() => loadConfig(['--config', configFile('{ not json')], home)).toThrow(/is not valid JSON/);
  });

  it('takes the web origins allowed to call the gateway from flags, the environment or the file, and refuses what is no origin', () => {
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(loadConfig([], home).allowedOrigins).toEqual([]);
    expect(loadConfig(['--allow-origin', 'https://ui.example.com', '--allow-origin', 'http://10.0.0.*:3000'], home).allowedOrigins).toEqual(['https://ui.example.com', 'http://10.0.0.*:3000']);
    expect(loadConfig([], { ...home, HIVEMESH_ALLOWED_ORIGINS: 'https://a.example, https://b.example' }).allowedOrigins).toEqual(['https://a.example', 'https://b.example']);
    expect(loadConfig(['--config', configFile({ allowedOrigins: ['*'] })], home).allowedOrigins).toEqual(['*']);
    expect(() => loadConfig(['--allow-origin', 'ui.example.com'], home)).toThrow(new ConfigError(
      '--allow-origin: "ui.example.com" is not an origin; use the form https://app.example.com or http://10.0.0.5:3000 ("*" matches any run of characters, "*" alone any origin)'));
  });

  it('refuses a finished-task count above what the replicated state keeps, and a keep time too short to read a result', () => {
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(limits.finishedTasksMax).toBe(20_000); // the README's "at most 20,000"
    expect(loadConfig(['--keep-finished-tasks', String(limits.finishedTasksMax)], home).keepFinishedTasks).toBe(limits.finishedTasksMax);
    expect(() => loadConfig(['--keep-finished-tasks', '50000'], home)).toThrow(new ConfigError(
      '--keep-finished-tasks: must be an integer from 0 to 20000, got "50000" (the replicated state keeps at most 20000 finished tasks, whatever this asks)'));
    expect(() => loadConfig([], { ...home, HIVEMESH_KEEP_FINISHED_TASKS: '20001' })).toThrow(/^HIVEMESH_KEEP_FINISHED_TASKS: must be an integer from 0 to 20000/);
    expect(() => loadConfig(['--config', configFile({ keepFinishedTasks: 1_000_000 })], home)).toThrow(/^"keepFinishedTasks" in the config file: must be an integer from 0 to 20000/);

    expect(keepFinishedTasksMsMin).toBe(60_000);
    expect(loadConfig(['--keep-finished-tasks-ms', '60000'], home).keepFinishedTasksMs).toBe(60_000);
    expect(() => loadConfig(['--keep-finished-tasks-ms', '1'], home)).toThrow(new ConfigError(
      '--keep-finished-tasks-ms: must be an integer from 60000 to 31536000000, got "1" (kept less than 60 s, a finished task could be pruned before a --wait client that reconnects or a poll of GET /api/tasks/ID reads its result)'));
    expect(() => loadConfig([], { ...home, HIVEMESH_KEEP_FINISHED_TASKS_MS: '0' })).toThrow(/^HIVEMESH_KEEP_FINISHED_TASKS_MS: must be an integer from 60000 /);
    // A value that is no integer at all is told so, without the reason for the bounds.
    expect(() => loadConfig(['--keep-finished-tasks-ms', 'soon'], home)).toThrow(/^--keep-finished-tasks-ms: must be an integer from 60000 to 31536000000, got "soon"$/);
    expect(loadConfig([], home)).toMatchObject({ keepFinishedTasks: 10_000, keepFinishedTasksMs: 7 * 86_400_000 });
  });
});
