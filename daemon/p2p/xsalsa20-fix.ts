// Works around a crash in xsalsa20 1.2.0, the cipher of @libp2p/pnet (the cluster key).
// Its WebAssembly instances share one memory but each keeps its own view of it; when one
// instance grows the memory (an update larger than the ~650 KB it starts with: a big Raft
// append or relayed batch), every other instance's view is detached (length 0), and its
// next update "grows" the memory again by the whole update size, detaching the others in
// turn. With a few connections busy, memory then grows on nearly every update and the
// process dies within about a thousand updates ("WebAssembly.Memory.grow(): Maximum memory
// size exceeded"). Seen in the loopback failover suite when a restarted leader caught up.
// Here an instance whose view is detached gets a fresh view of the current memory before
// its update, so the memory grows only when an update really needs more. Applied once, on
// import, to the library's constructor, which @libp2p/pnet shares (one CommonJS module).
import { createRequire } from 'node:module';

interface WasmXor {
  _memory?: Uint8Array;
}

interface XSalsa20Instance {
  _xor: WasmXor | null;
  update(input: Uint8Array, output?: Uint8Array): Uint8Array;
  finalize(): void;
}

type XSalsa20Constructor = ((nonce: Uint8Array, key: Uint8Array) => XSalsa20Instance) & { prototype: XSalsa20Instance };

const require = createRequire(import.meta.url);
const XSalsa20 = require('xsalsa20') as XSalsa20Constructor;
const patched = Symbol.for('hivemesh.xsalsa20DetachedViewFix');
const prototype = XSalsa20.prototype as XSalsa20Instance & { [patched]?: boolean };

/** A view of the memory as it is now: a new instance takes one, then gives its slot back. */
function currentMemory(): Uint8Array | undefined {
  const probe = XSalsa20(new Uint8Array(24), new Uint8Array(32));
  const memory = probe._xor?._memory;
  probe.finalize();
  return memory;
}

if (prototype[patched] !== true) {
  prototype[patched] = true;
  const update = prototype.update;
  prototype.update = function updateWithLiveView(this: XSalsa20Instance, input: Uint8Array, output?: Uint8Array): Uint8Array {
    const xor = this._xor;
    if (xor?._memory !== undefined && xor._memory.byteLength === 0) {
      const memory = currentMemory();
      if (memory !== undefined) xor._memory = memory;
    }
    return update.call(this, input, output);
  };
}

/** Whether the workaround is in place (for tests). */
export function xsalsa20FixInstalled(): boolean {
  return prototype[patched] === true;
}
