/** SHA-256 digests as lowercase hex: how API keys are stored and looked up (never the key itself). */
const encoder = new TextEncoder();

export async function sha256Hex(text: string): Promise<string> {
  return hex(await crypto.subtle.digest("SHA-256", encoder.encode(text)));
}

/** "00".."ff" by byte value. */
const HEX_BYTES = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export function hex(digest: ArrayBuffer): string {
  let out = "";
  for (const b of new Uint8Array(digest)) out += HEX_BYTES[b]!;
  return out;
}
