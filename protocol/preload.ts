// Preload: the leader's request "load this model into your Ollama's VRAM now", sent to one
// node as a one-way message when the tasks that node would have finished sooner with the
// model loaded have paid for a load (placement's ski rental). The node loads it the way
// Ollama documents (a generation with an empty prompt), so the next tasks of that model find
// it warm, and no task waits for the load. Advisory: a lost or refused request only leaves
// the model cold, and the leader stops counting on it once it is overdue.
import { Type, type Static } from '@sinclair/typebox';
import { jsonCodec } from './codec.ts';
import * as limits from './limits.ts';
import { PROTOCOL_VERSION } from './version.ts';

export const PRELOAD_PROTOCOL = `/hivemesh/preload/${PROTOCOL_VERSION}.0.0`;
export const preloadRequestBytesMax = 4 * 1024;

export const PreloadRequest = Type.Object({
  kind: Type.Literal('preload'),
  /** The node asking; receivers ignore requests from anyone but the leader they know. */
  leader: Type.String({ minLength: 1, maxLength: 128 }),
  term: Type.Integer({ minimum: 0 }),
  model: Type.String({ minLength: 1, maxLength: limits.modelNameLengthMax }),
}, { additionalProperties: false });
export type PreloadRequest = Static<typeof PreloadRequest>;

export const preloadRequestCodec = jsonCodec('preload request', PreloadRequest, preloadRequestBytesMax);
