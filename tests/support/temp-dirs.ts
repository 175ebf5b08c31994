// Temporary directories for unit tests, removed after each test.
import { rmSync } from 'node:fs';
import { afterEach } from 'vitest';
import { tempDir } from './processes.ts';

/** Returns a maker of fresh directories under the system's tmp dir; each is removed after its test. */
export function tempDirsRemovedAfterEach(prefix: string): () => string {
  const made: string[] = [];
  afterEach(() => {
    for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    const dir = tempDir(prefix);
    made.push(dir);
    return dir;
  };
}
