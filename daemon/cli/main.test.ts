// The CLI's entry: --help on any client command prints the usage and succeeds; unknown
// commands fail with a pointer to it.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from './main.ts';

afterEach(() => {
  vi.restoreAllMocks();
});

function captureStdout(): () => string {
  const chunks: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    chunks.push(String(chunk));
    return true;
  });
  return () => chunks.join('');
}

describe('hivemesh CLI', () => {
  it('prints the usage for --help or -h after a client command, without contacting a daemon', async () => {
    for (const argv of [['submit', '--help'], ['tasks', '-h'], ['token', 'create', '--help'], ['cancel', '--help']]) {
      const output = captureStdout();
      await expect(main(argv)).resolves.toBe(0);
      expect(output()).toMatch(/hivemesh submit \[--model M \| --capability C\]/);
      vi.restoreAllMocks();
    }
  });

  it('refuses a --url that is not an http(s) URL before contacting anything', async () => {
    await expect(main(['status', '--url', 'notaurl'])).rejects.toThrow(/--url "notaurl" is not an http\(s\) URL/);
    await expect(main(['tasks', '--url', 'ftp://host'])).rejects.toThrow(/is not an http\(s\) URL/);
  });

  it('refuses an unknown command and says where the commands are', async () => {
    await expect(main(['frobnicate'])).rejects.toThrow(/unknown command "frobnicate".*hivemesh --help/);
  });
});
