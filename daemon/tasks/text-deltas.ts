// Streamed text cut into deltas that are whole characters. Ollama's chunks may end between
// the two UTF-16 halves of a character outside the BMP (an emoji, a rare CJK ideograph):
// JSON.stringify then writes each half as a lone `\ud83d` escape, which JS clients happen
// to join again but jq refuses and Go, Rust and Python decoders turn into U+FFFD. So a
// delta never ends on a high surrogate (it is held for the next one) and never carries a
// lone surrogate; the output stored for the task is the concatenation of the deltas.

/** What stands for a character that was cut off or never whole (as TextDecoder does). */
export const replacementCharacter = '\uFFFD';

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff;
}

// With the `u` flag a pair is one code point, so \p{Cs} matches only unpaired halves.
const loneSurrogatePattern = /\p{Cs}/gu;

/** The text with every lone surrogate replaced by U+FFFD; a well-formed text is returned as is. */
export function wellFormed(text: string): string {
  loneSurrogatePattern.lastIndex = 0;
  return loneSurrogatePattern.test(text) ? text.replace(loneSurrogatePattern, replacementCharacter) : text;
}

/**
 * Holds back a high surrogate that ends a delta and prepends it to the next one, so every
 * delta it gives out is whole characters. One per stream; `end()` when the stream ends.
 */
export class SurrogateCarry {
  private held = '';

  /** The whole characters of `delta` and what was held before it; '' when nothing is whole yet. */
  push(delta: string): string {
    let text = this.held + delta;
    this.held = '';
    if (text !== '' && isHighSurrogate(text.charCodeAt(text.length - 1))) {
      this.held = text.slice(-1);
      text = text.slice(0, -1);
    }
    // Left after the carry: halves the stream itself never paired (a broken upstream).
    return wellFormed(text);
  }

  /**
   * The stream ended (finished, failed or aborted). A held high surrogate can never be
   * completed now: it comes out as U+FFFD, so the last delta is well-formed too and a
   * watcher can see that a character was cut off.
   */
  end(): string {
    const cutOff = this.held !== '';
    this.held = '';
    return cutOff ? replacementCharacter : '';
  }
}

/**
 * Where the piece of `text` that starts at `start` ends when it may be at most
 * `lengthMax` UTF-16 units long: one unit earlier when the bound falls inside a pair.
 * Always past `start` while text remains.
 */
export function pieceEnd(text: string, start: number, lengthMax: number): number {
  if (lengthMax < 2) throw new Error(`a piece bound of ${lengthMax} UTF-16 units cannot hold a surrogate pair`);
  const end = Math.min(text.length, start + lengthMax);
  if (end < text.length && isHighSurrogate(text.charCodeAt(end - 1)) && isLowSurrogate(text.charCodeAt(end))) return end - 1;
  return end;
}
