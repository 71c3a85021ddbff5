/**
 * Limits on the shape of JSON a caller sends, and its canonical form. Why a depth limit: past a few
 * thousand levels, handing a value to a Durable Object (RPC serialization) overflows the stack, and
 * nothing legitimate nests this deep.
 */

/** How deeply a JSON body may nest objects and arrays; the body itself is level 1. */
export const MAX_JSON_DEPTH = 64;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;

/**
 * Whether UTF-8 JSON text nests deeper than `max`, found by scanning its bytes (no parse, no
 * recursion: safe on any input). Returns null when it does not, else the top-level key the deep value
 * sits under ("" when the top level is not an object). Malformed text is left to the JSON parser.
 */
export function jsonTooDeep(bytes: Uint8Array, max: number = MAX_JSON_DEPTH): { path: string } | null {
  let depth = 0;
  let inString = false;
  let stringStart = -1;
  let lastString: [number, number] | null = null;
  let topKey = "";
  let topIsObject = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === BACKSLASH) i++;
      else if (b === QUOTE) {
        inString = false;
        if (depth === 1) lastString = [stringStart, i];
      }
      continue;
    }
    if (b === QUOTE) {
      inString = true;
      stringStart = i + 1;
    } else if (b === 0x7b || b === 0x5b) {
      if (depth === 0) topIsObject = b === 0x7b;
      if (++depth > max) return { path: topIsObject ? topKey : "" };
    } else if (b === 0x7d || b === 0x5d) {
      depth--;
    } else if (b === COLON && depth === 1 && lastString) {
      topKey = new TextDecoder().decode(bytes.subarray(lastString[0], lastString[1]));
    }
  }
  return null;
}

/**
 * Whether a value nests objects and arrays deeper than `max` levels (the value itself, when an object
 * or array, is level 1). Iterative, and it stops at the limit, so a cyclic value (RPC can carry one)
 * is simply too deep.
 */
export function nestsDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length) {
    const [v, level] = stack.pop()!;
    if (v === null || typeof v !== "object") continue;
    if (level > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (child !== null && typeof child === "object") stack.push([child, level + 1]);
    }
  }
  return false;
}

/**
 * JSON with object keys sorted at every level, so that two values a JSON reader takes as equal
 * ({"a":1,"b":2} and {"b":2,"a":1}) have one text. Undefined members are dropped, as JSON.stringify does.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(",")}]`;
  const entries = Object.keys(value).sort()
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`);
  return `{${entries.join(",")}}`;
}
