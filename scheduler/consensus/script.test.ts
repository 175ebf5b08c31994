// Runs the scripted scenarios in testdata/*.txt against the Raft core and compares the
// output with the golden text after each "----". REWRITE=1 rewrites the golden output.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runScript } from './script.ts';

const directory = join(import.meta.dirname, 'testdata');
const files = readdirSync(directory).filter((name) => name.endsWith('.txt')).sort();

describe('scripted scenarios', () => {
  it('has scenarios', () => {
    expect(files.length).toBeGreaterThan(0);
  });
  for (const file of files) {
    it(file, () => {
      const path = join(directory, file);
      const text = readFileSync(path, 'utf8');
      const { cases, rewritten } = runScript(text);
      if (process.env.REWRITE === '1') {
        writeFileSync(path, rewritten);
        return;
      }
      for (const scriptCase of cases) {
        expect(scriptCase.actual.join('\n'), `after:\n${scriptCase.commands.join('\n')}`).toBe(scriptCase.expected.join('\n'));
      }
    });
  }
});
