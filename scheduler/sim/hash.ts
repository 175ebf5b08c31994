// FNV-1a (32-bit) for trace hashes and applied-history chains: cheap, deterministic and
// good enough to tell two runs or two histories apart.

export const fnvOffset = 0x811c9dc5;

export function fnvString(hash: number, text: string): number {
  let value = hash;
  for (let index = 0; index < text.length; index++) {
    value ^= text.charCodeAt(index);
    value = Math.imul(value, 0x01000193);
  }
  // A separator so that ("ab","c") and ("a","bc") differ.
  value ^= 0xff;
  return Math.imul(value, 0x01000193) >>> 0;
}

export function fnvNumber(hash: number, number: number): number {
  let value = hash;
  // Numbers in the simulator are integers below 2^53; hash both 32-bit halves.
  const low = number >>> 0;
  const high = Math.floor(number / 0x1_0000_0000) >>> 0;
  for (let shift = 0; shift < 32; shift += 8) {
    value ^= (low >>> shift) & 0xff;
    value = Math.imul(value, 0x01000193);
  }
  for (let shift = 0; shift < 32; shift += 8) {
    value ^= (high >>> shift) & 0xff;
    value = Math.imul(value, 0x01000193);
  }
  return value >>> 0;
}

export function hex32(value: number): string {
  return (value >>> 0).toString(16).padStart(8, '0');
}
