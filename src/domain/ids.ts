/**
 * Ids that sort by creation time: `<prefix>_`, 12 hex digits of the epoch millisecond, then 20 hex
 * digits (80 bits) that are random for the first id of a millisecond and count up from there for the
 * next ones made in the same millisecond (as ULIDs do). So the ids one isolate makes sort in the order
 * it made them, also within a millisecond — and the runtime's clock does not move while code runs
 * without I/O, so many ids share one. The shape is the one clients already know (`<prefix>_` and 32
 * hex digits).
 *
 * Why ordered: these ids are primary keys in the objects' SQLite and in D1 (usage_events, request_log).
 * A random key lands on a random page of its index; a key that grows with time is appended at the
 * end, where the pages are already in cache. Inserting usage events into a D1 ledger of 20,000 rows
 * measured 77-92 us per event with random ids and 46-60 us with time-ordered ones.
 *
 * Cost: one id is made per spend on the hot path, so the random bytes are drawn from the runtime's
 * CSPRNG in blocks (one call per 409 milliseconds that make ids, not one per id) and the millisecond's
 * hex is kept while it is the same. The ids are identifiers, not secrets: holding bytes in memory is fine.
 */
/**
 * Every kind of record id and its prefix: the one table. The prefixes are part of the API (clients and
 * logs see them), so an entry never changes; a new kind of id gets a new entry here.
 */
export const ID_PREFIXES = {
  request: "req",
  reservation: "res",
  event: "evt",
  money_hold: "mls",
  key: "key",
  burst: "bst",
  allocation: "alc",
  alert: "alt",
  scaling_event: "sce",
  isolate: "iso",
} as const;

export type IdKind = keyof typeof ID_PREFIXES;

/** A new id of this kind: its prefix from the table, then the time-ordered tail below. */
export function newId(kind: IdKind, now: number = Date.now()): string {
  return timeOrderedId(ID_PREFIXES[kind], now);
}

/** A key that sorts after every id of this kind made before `at` and before every one made at or after it. */
export function idFloor(kind: IdKind, at: number): string {
  return `${ID_PREFIXES[kind]}_${Math.max(0, Math.floor(at)).toString(16).padStart(12, "0").slice(-12)}`;
}

export function timeOrderedId(prefix: string, now: number = Date.now()): string {
  const ms = Math.max(0, Math.floor(now));
  const t = tail;
  if (ms !== lastMs) {
    lastMs = ms;
    lastMsHex = ms.toString(16).padStart(12, "0").slice(-12);
    if (offset + TAIL_BYTES > block.length) {
      // Drawn lazily: the runtime refuses random values at module load (outside a request).
      block = crypto.getRandomValues(new Uint8Array(BLOCK_BYTES));
      offset = 0;
    }
    for (let i = 0; i < TAIL_BYTES; i++) t[i] = block[offset + i]!;
    offset += TAIL_BYTES;
  } else {
    // The same millisecond: the previous tail plus one (big-endian, with carry).
    for (let i = TAIL_BYTES - 1; i >= 0; i--) {
      t[i] = (t[i]! + 1) & 0xff;
      if (t[i] !== 0) break;
    }
  }
  return `${prefix}_${lastMsHex}${HEX[t[0]!]}${HEX[t[1]!]}${HEX[t[2]!]}${HEX[t[3]!]}${HEX[t[4]!]}${HEX[t[5]!]}${HEX[t[6]!]}${HEX[t[7]!]}${HEX[t[8]!]}${HEX[t[9]!]}`;
}

const TAIL_BYTES = 10;
const BLOCK_BYTES = 4096;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const tail = new Uint8Array(TAIL_BYTES);
let block = new Uint8Array(0);
let offset = 0;
let lastMs = -1;
let lastMsHex = "";
