/**
 * Ids that sort by creation time: `<prefix>_`, 12 hex digits of the epoch millisecond, then 20 random
 * hex digits (80 bits). The shape is the one clients already know (`<prefix>_` and 32 hex digits).
 *
 * Why ordered: these ids are primary keys in the objects' SQLite and in D1 (usage_events, request_log).
 * A random key lands on a random page of its index; a key that grows with time is appended at the
 * end, where the pages are already in cache. Inserting usage events into a D1 ledger of 20,000 rows
 * measured 77-92 us per event with random ids and 46-60 us with time-ordered ones.
 *
 * Cost: one id is made per spend on the hot path, so the random bytes are drawn from the runtime's
 * CSPRNG in blocks (one call per 409 ids, not one per id) and the millisecond's hex is kept while
 * it is the same. The ids are identifiers, not secrets: holding the next bytes in memory is fine.
 */
export function timeOrderedId(prefix: string, now: number = Date.now()): string {
  const ms = Math.max(0, Math.floor(now));
  if (ms !== lastMs) {
    lastMs = ms;
    lastMsHex = ms.toString(16).padStart(12, "0").slice(-12);
  }
  if (offset + RANDOM_BYTES > block.length) {
    // Drawn lazily: the runtime refuses random values at module load (outside a request).
    block = crypto.getRandomValues(new Uint8Array(BLOCK_BYTES));
    offset = 0;
  }
  const b = block;
  const i = offset;
  offset += RANDOM_BYTES;
  return `${prefix}_${lastMsHex}${HEX[b[i]!]}${HEX[b[i + 1]!]}${HEX[b[i + 2]!]}${HEX[b[i + 3]!]}${HEX[b[i + 4]!]}${HEX[b[i + 5]!]}${HEX[b[i + 6]!]}${HEX[b[i + 7]!]}${HEX[b[i + 8]!]}${HEX[b[i + 9]!]}`;
}

const RANDOM_BYTES = 10;
const BLOCK_BYTES = 4096;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
let block = new Uint8Array(0);
let offset = 0;
let lastMs = -1;
let lastMsHex = "";
