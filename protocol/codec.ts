// Decoding of JSON wire messages: size first, then syntax, then the schema. Every
// refusal says why, so a log line points at the sender's fault.
import type { TSchema, Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { DecodeError } from './errors.ts';

export interface JsonCodec<T extends TSchema> {
  readonly name: string;
  readonly bytesMax: number;
  encode(value: Static<T>): Uint8Array;
  /** Throws DecodeError with the reason when the bytes are not a valid message. */
  decode(bytes: Uint8Array): Static<T>;
  /** Checks an already-parsed value; returns the reason it is invalid, or null. */
  check(value: unknown): string | null;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder('utf-8', { fatal: true });

export function describeSchemaErrors(errors: Iterable<{ path: string; message: string }>, max = 3): string {
  const parts: string[] = [];
  for (const error of errors) {
    parts.push(`${error.path || '/'}: ${error.message}`);
    if (parts.length >= max) break;
  }
  return parts.join('; ');
}

export function jsonCodec<T extends TSchema>(name: string, schema: T, bytesMax: number): JsonCodec<T> {
  const compiled = TypeCompiler.Compile(schema);
  const check = (value: unknown): string | null =>
    compiled.Check(value) ? null : describeSchemaErrors(compiled.Errors(value));
  return {
    name,
    bytesMax,
    check,
    encode(value) {
      const reason = check(value);
      if (reason !== null) throw new DecodeError(`refusing to encode an invalid ${name}: ${reason}`);
      const bytes = textEncoder.encode(JSON.stringify(value));
      if (bytes.byteLength > bytesMax) throw new DecodeError(`${name} is ${bytes.byteLength} bytes, over the ${bytesMax}-byte limit`);
      return bytes;
    },
    decode(bytes) {
      if (bytes.byteLength > bytesMax) throw new DecodeError(`${name} is ${bytes.byteLength} bytes, over the ${bytesMax}-byte limit`);
      let value: unknown;
      try {
        value = JSON.parse(textDecoder.decode(bytes));
      } catch (error) {
        throw new DecodeError(`${name} is not valid UTF-8 JSON: ${(error as Error).message}`);
      }
      const reason = check(value);
      if (reason !== null) throw new DecodeError(`invalid ${name}: ${reason}`);
      return value as Static<T>;
    },
  };
}
