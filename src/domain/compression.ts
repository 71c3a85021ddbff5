import { savedBytes, shouldCompress } from "./optimizer";

/**
 * Text stored compressed or as it is, told apart by a prefix: "gz:" + base64 of gzip, or the text
 * itself. A text that itself begins with one of the prefixes is stored as "raw:" + text, so that
 * decompressText(compressText(t).stored) === t for every well-formed string.
 */
const GZIP = "gz:";
const RAW = "raw:";

export interface Compressed {
  /** What to store: "gz:<base64 gzip>", or the text (escaped with "raw:" when it begins with a prefix). */
  stored: string;
  compressed: boolean;
  /** UTF-8 bytes of the text minus the bytes of its stored form; 0 when stored uncompressed. */
  bytesSaved: number;
}

const encoder = new TextEncoder();
// ignoreBOM: a text that begins with U+FEFF keeps it (by default the decoder would drop it).
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A lone surrogate cannot round-trip through UTF-8; such text is stored as it is. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function asIs(text: string): Compressed {
  const escape = text.startsWith(GZIP) || text.startsWith(RAW);
  return { stored: escape ? RAW + text : text, compressed: false, bytesSaved: 0 };
}

/**
 * Gzip `text` (CompressionStream) when its UTF-8 size is above `thresholdBytes` and the stored form
 * comes out smaller; otherwise keep it as it is.
 */
export async function compressText(text: string, thresholdBytes: number): Promise<Compressed> {
  // A UTF-16 code unit is at most 3 bytes of UTF-8: a text this short is under the threshold, unread
  // (most results are; this was ~1.5% of a drain's CPU, every settled result encoded to be measured).
  if (text.length * 3 <= thresholdBytes) return asIs(text);
  if (LONE_SURROGATE.test(text)) return asIs(text);
  const bytes = encoder.encode(text);
  if (!shouldCompress(bytes.length, thresholdBytes)) return asIs(text);
  const stored = GZIP + toBase64(await pipe(bytes, new CompressionStream("gzip")));
  const saved = savedBytes(bytes.length, stored.length);
  return saved > 0 ? { stored, compressed: true, bytesSaved: saved } : asIs(text);
}

/** The text that compressText() was given. Throws on a "gz:" value that is not valid gzip of UTF-8. */
export async function decompressText(stored: string): Promise<string> {
  if (stored.startsWith(RAW)) return stored.slice(RAW.length);
  if (!stored.startsWith(GZIP)) return stored;
  return decoder.decode(await pipe(fromBase64(stored.slice(GZIP.length)), new DecompressionStream("gzip")));
}

async function pipe(bytes: Uint8Array, transform: CompressionStream | DecompressionStream): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(transform);
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Chunked so that a large buffer never becomes one huge argument list. */
function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
