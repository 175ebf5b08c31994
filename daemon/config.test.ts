// Configuration: flag over environment over config file over default, the config file's
// keys (the flags in camelCase), and what a bad value says.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { tempDirsRemovedAfterEach } from '../tests/support/temp-dirs.ts';
import { ConfigError, loadConfig } from './config.ts';

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

  it('says what is wrong with a bad value, key or file', () => {
    const home = { HOME: '/tmp/hivemesh-config-home' };
    expect(() => loadConfig(['--api-port', '70000'], home)).toThrow(ConfigError);
    expect(() => loadConfig(['--api-port', '70000'], home)).toThrow(/api-port/);
    expect(() => loadConfig(['--frobnicate'], home)).toThrow(/hivemesh start --help/);
    expect(() => loadConfig(['--config', configFile({ colour: 'red' })], home)).toThrow(/unknown setting "colour"; known settings: .*apiPort/);
    expect(() => loadConfig(['--config', configFile({ voters: 3, votersTarget: 3 })], home)).toThrow(/"voters" or "votersTarget", not both/);
    expect(() => loadConfig(['--config', configFile('{ not json')], home)).toThrow(/is not valid JSON/);
  });
});
