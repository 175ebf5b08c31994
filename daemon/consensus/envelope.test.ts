// Raft messages on the wire: a snapshot's image after the JSON, raw; everything else JSON.
import { describe, expect, it } from 'vitest';
import type { Message } from '../../scheduler/consensus/types.ts';
import { decodeEnvelope, encodeEnvelope } from './envelope.ts';

const config = { voters: ['n1', 'n2'], learners: ['n3'] };

describe('raft envelope', () => {
  it('round-trips messages without an image as plain JSON', () => {
    const message: Message = { type: 'append', from: 'n1', to: 'n2', term: 3, logIndex: 9, logTerm: 2, commit: 9,
      entries: [{ index: 10, term: 3, type: 'normal', data: 'quote " nul \u0000 bee \u{1F41D}' }] };
    const bytes = encodeEnvelope({ clusterId: 'c-1', message });
    expect(new TextDecoder().decode(bytes)).toBe(JSON.stringify({ clusterId: 'c-1', message }));
    expect(decodeEnvelope(bytes)).toEqual({ clusterId: 'c-1', message });
  });

  it('sends a snapshot image raw after a NUL, unescaped, and reads it back exactly', () => {
    // JSON text, as the state machine's image is, with what JSON escapes and what UTF-8 widens.
    const data = JSON.stringify({ tasks: [{ prompt: 'say "hi"\n\ttab \\ back', output: 'é 中 \u{1F41D}' }] });
    const message: Message = { type: 'snapshot', from: 'n1', to: 'n3', term: 4, snapshot: { index: 120, term: 4, config, data } };
    const bytes = encodeEnvelope({ clusterId: 'c-1', message });
    const separator = bytes.indexOf(0);
    expect(separator).toBeGreaterThan(0);
    // The image is not escaped: its bytes after the NUL are its own UTF-8.
    expect(Buffer.from(bytes.subarray(separator + 1)).equals(Buffer.from(data, 'utf8'))).toBe(true);
    expect(JSON.parse(new TextDecoder().decode(bytes.subarray(0, separator)))).toMatchObject({ message: { snapshot: { index: 120, data: '' } } });
    expect(decodeEnvelope(bytes)).toEqual({ clusterId: 'c-1', message });
    // An empty image too.
    const empty: Message = { ...message, snapshot: { index: 1, term: 1, config, data: '' } };
    expect(decodeEnvelope(encodeEnvelope({ clusterId: 'c-1', message: empty }))).toEqual({ clusterId: 'c-1', message: empty });
  });

  it('still reads a snapshot sent inside the JSON (a node of an earlier version), and refuses an image with nowhere to go', () => {
    const message: Message = { type: 'snapshot', from: 'n1', to: 'n3', term: 4, snapshot: { index: 7, term: 4, config, data: '{"a":"b"}' } };
    expect(decodeEnvelope(new TextEncoder().encode(JSON.stringify({ clusterId: 'c-1', message })))).toEqual({ clusterId: 'c-1', message });
    const orphan = Buffer.concat([Buffer.from(JSON.stringify({ clusterId: 'c-1', message: { type: 'heartbeat', from: 'n1', to: 'n2', term: 1, commit: 0 } })), Buffer.from([0]), Buffer.from('image')]);
    expect(() => decodeEnvelope(orphan)).toThrow(/carries no snapshot/);
    expect(() => decodeEnvelope(Buffer.from([0x7b, 0]))).toThrow(SyntaxError);
  });
});
