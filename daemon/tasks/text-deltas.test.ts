// Deltas in whole characters: a text cut anywhere (surrogate pairs split at every
// position, emoji ZWJ sequences, CJK, a stream ending on a high surrogate) comes out of
// SurrogateCarry with no lone surrogate and, when it was well-formed, unchanged when joined;
// pieceEnd never cuts a pair.
import { describe, expect, it } from 'vitest';
import { SurrogateCarry, pieceEnd, replacementCharacter, wellFormed } from './text-deltas.ts';

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** The text cut at the given UTF-16 offsets, as a stream would deliver it. */
function cutAt(text: string, offsets: number[]): string[] {
  const pieces: string[] = [];
  let start = 0;
  for (const offset of [...offsets, text.length]) {
    pieces.push(text.slice(start, offset));
    start = offset;
  }
  return pieces;
}

/** What the carry gives out for the pieces, then at the end; empty deltas are not sent. */
function carried(pieces: string[]): string[] {
  const carry = new SurrogateCarry();
  return [...pieces.map((piece) => carry.push(piece)), carry.end()].filter((delta) => delta !== '');
}

const samples = {
  emoji: 'am 😀 ok',
  family: 'am 👨‍👩‍👧‍👦 here',
  flags: '🇫🇷🇯🇵',
  cjk: '网格节点回答',
  rareCjk: '𠀀𪚥𩸽',
  mixed: 'a😀b网𠀀c👩🏽‍💻',
};

describe('SurrogateCarry', () => {
  for (const [name, text] of Object.entries(samples)) {
    it(`gives whole characters for ${name} cut at every position, and the same text joined`, () => {
      for (let offset = 0; offset <= text.length; offset++) {
        const deltas = carried(cutAt(text, [offset]));
        for (const delta of deltas) expect(delta, `cut at ${offset}: ${JSON.stringify(delta)}`).not.toMatch(loneSurrogate);
        expect(deltas.join('')).toBe(text);
      }
    });
  }

  it('gives whole characters for text cut into pieces of 1 to 5 units, as a JSON stream is', () => {
    const text = samples.mixed + samples.family + samples.rareCjk;
    for (let size = 1; size <= 5; size++) {
      const offsets = Array.from({ length: Math.ceil(text.length / size) - 1 }, (_, index) => (index + 1) * size);
      const deltas = carried(cutAt(text, offsets));
      for (const delta of deltas) expect(delta).not.toMatch(loneSurrogate);
      expect(deltas.join('')).toBe(text);
    }
  });

  it('holds a high surrogate back and puts it in front of the next delta', () => {
    const carry = new SurrogateCarry();
    expect(carry.push('am \ud83d')).toBe('am ');
    expect(carry.push('\udc68\u200d👩')).toBe('👨\u200d👩');
    expect(carry.push('\ud83d')).toBe('');
    expect(carry.push('\udc67')).toBe('👧');
    expect(carry.end()).toBe('');
  });

  it('ends a stream cut after a high surrogate with U+FFFD, once', () => {
    const carry = new SurrogateCarry();
    expect(carry.push('bye \ud83d')).toBe('bye ');
    expect(carry.end()).toBe(replacementCharacter);
    expect(carry.end()).toBe('');
  });

  it('turns halves the stream never paired into U+FFFD', () => {
    const carry = new SurrogateCarry();
    expect(carry.push('a\udc00b')).toBe(`a${replacementCharacter}b`);
    expect(carry.push('\ud83d')).toBe('');
    expect(carry.push('x')).toBe(`${replacementCharacter}x`);
    expect(carry.push('\udc68')).toBe(replacementCharacter);
  });
});

describe('wellFormed', () => {
  it('keeps a well-formed text as it is and replaces each lone half', () => {
    expect(wellFormed(samples.mixed)).toBe(samples.mixed);
    expect(wellFormed('\udc00\ud800')).toBe(replacementCharacter.repeat(2));
    expect(wellFormed('x\ud83d\ud83d\ude00')).toBe(`x${replacementCharacter}😀`);
  });
});

describe('pieceEnd', () => {
  it('cuts at the bound, or one unit before it when the bound falls inside a pair', () => {
    const text = 'ab😀cd';
    expect(pieceEnd(text, 0, 2)).toBe(2);
    expect(pieceEnd(text, 0, 3)).toBe(2);
    expect(pieceEnd(text, 0, 4)).toBe(4);
    expect(pieceEnd(text, 2, 2)).toBe(4);
    expect(pieceEnd(text, 4, 10)).toBe(text.length);
    expect(() => pieceEnd(text, 0, 1)).toThrow(/cannot hold a surrogate pair/);
  });

  it('splits emoji, ZWJ sequences and CJK into whole pieces of every bound', () => {
    const text = samples.mixed + samples.family + samples.cjk + samples.rareCjk;
    for (let lengthMax = 2; lengthMax <= 7; lengthMax++) {
      const pieces: string[] = [];
      for (let start = 0, end = 0; start < text.length; start = end) {
        end = pieceEnd(text, start, lengthMax);
        pieces.push(text.slice(start, end));
      }
      for (const piece of pieces) {
        expect(piece.length).toBeLessThanOrEqual(lengthMax);
        expect(piece).not.toMatch(loneSurrogate);
      }
      expect(pieces.join('')).toBe(text);
    }
  });
});
