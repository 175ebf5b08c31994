// The xsalsa20 workaround: after one large update, many connections' ciphers taking turns
// no longer grow the shared WebAssembly memory until the process dies, and the keystream
// stays exactly what one uninterrupted cipher produces.
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { xsalsa20FixInstalled } from './xsalsa20-fix.ts';

const require = createRequire(import.meta.url);
const XSalsa20 = require('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => { update(input: Uint8Array): Uint8Array };

describe('xsalsa20 with the detached-view fix', () => {
  it('is installed by importing the module', () => {
    expect(xsalsa20FixInstalled()).toBe(true);
  });

  it('survives thousands of alternating updates after a large one, with the right keystream', () => {
    const nonce = randomBytes(24);
    const key = randomBytes(32);
    const a = XSalsa20(nonce, key);
    const b = XSalsa20(randomBytes(24), key);
    const chunks: Uint8Array[] = [randomBytes(1_000_000)];
    const encrypted: Uint8Array[] = [a.update(chunks[0]!)];
    // Unpatched, this dies after about 1,000 updates (WebAssembly.Memory.grow fails).
    for (let n = 0; n < 5_000; n += 1) {
      const chunk = randomBytes(1 + (n % 97));
      b.update(randomBytes(50));
      chunks.push(chunk);
      encrypted.push(a.update(chunk));
    }
    const whole = Buffer.concat(chunks);
    const reference = XSalsa20(nonce, key).update(whole);
    expect(Buffer.compare(Buffer.concat(encrypted), Buffer.from(reference))).toBe(0);
  });
});
