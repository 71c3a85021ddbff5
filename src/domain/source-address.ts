/**
 * The source a per-address limit counts against, from the address Cloudflare reports
 * (CF-Connecting-IP, which a client cannot set: Cloudflare overwrites it). An IPv4 address is its own
 * source; an IPv6 address counts by its /64, since one subscriber usually holds a whole /64 and could
 * otherwise take a fresh address per attempt. Without an address (a local `wrangler dev` or a test
 * calling the worker directly) every request shares the source "local".
 */
export function sourceAddress(ip: string | undefined | null): string {
  const text = ip?.trim().toLowerCase() ?? "";
  if (text === "") return "local";
  const v4 = ipv4(text) ?? ipv4(/^::ffff:([\d.]+)$/.exec(text)?.[1] ?? "");
  if (v4) return v4;
  const groups = ipv6Groups(text);
  if (!groups) return `other:${text.slice(0, 64)}`;
  return `${groups.slice(0, 4).join(":")}::/64`;
}

function ipv4(text: string): string | null {
  const parts = text.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) return null;
  return parts.map(Number).join(".");
}

/** The eight 16-bit groups of an IPv6 address, each without leading zeros; null when it is not one. */
function ipv6Groups(text: string): string[] | null {
  const address = text.split("%")[0]!; // a zone id names a local interface, not a source
  const halves = address.split("::");
  if (halves.length > 2) return null;
  const split = (half: string) => (half === "" ? [] : half.split(":"));
  const head = split(halves[0]!);
  const tail = halves.length === 2 ? split(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return null;
  return groups.map((g) => parseInt(g, 16).toString(16));
}
