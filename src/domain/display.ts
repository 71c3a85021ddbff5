import { formatUsd } from "./money";

/**
 * Figures as an operator reads them on the dashboard. Pure: the clock is a parameter. The exact value
 * always travels with the readable one (the caller puts it in a tooltip), so nothing is lost.
 */

const NANO_PER_CENT = 10_000_000;

/**
 * Money to the cent, rounded half away from zero, with thousands separators: "$9,997.75". An amount
 * that is not zero but rounds to no cent is "<$0.01", so a small spend never reads as nothing.
 * Integer arithmetic only: `nano - nano % NANO_PER_CENT` is exact for every safe integer.
 */
export function formatCents(nano: number): string {
  const sign = nano < 0 ? "-" : "";
  const abs = Math.abs(nano);
  const shifted = abs + NANO_PER_CENT / 2;
  const cents = (shifted - (shifted % NANO_PER_CENT)) / NANO_PER_CENT;
  if (cents === 0 && abs > 0) return `${sign}<$0.01`;
  const dollars = Math.floor(cents / 100).toLocaleString("en-US");
  return `${sign}$${dollars}.${String(cents % 100).padStart(2, "0")}`;
}

/** The exact amount for a tooltip: "9,997,749,900,000 nano-dollars ($9997.7499)". */
export function exactMoney(nano: number): string {
  return `${nano.toLocaleString("en-US")} nano-dollars (${formatUsd(nano)})`;
}

/** "2026-04-20 12:34:56 UTC". */
export function utcText(ms: number): string {
  return `${new Date(ms).toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

/** How long ago `ms` was at `now`, in the largest whole unit: "just now", "45 s ago", "3 min ago", "2 h ago", "4 d ago"; "in 3 min" ahead. */
export function relativeTime(ms: number, now: number): string {
  const diff = now - ms;
  const s = Math.floor(Math.abs(diff) / 1000);
  if (s < 5) return "just now";
  const amount = s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : s < 86_400 ? `${Math.floor(s / 3600)} h` : `${Math.floor(s / 86_400)} d`;
  return diff >= 0 ? `${amount} ago` : `in ${amount}`;
}

/** A worker failure as an operator reads it: a short code and the message, instead of the raw text. */
export interface FailureText {
  code: string;
  message: string;
}

const ANSWERED = /^worker answered (\d{3}): ?([\s\S]*)$/;
const TIMED_OUT = /^worker timed out after \d+ ms$/;
const FAILED = /^worker failed: ?([\s\S]*)$/;

/** `code` and `message` from a JSON error body: `{error: {code, message}}`, `{error: "..."}`, `{code, message}`; cut-off JSON by its fields. */
function fromBody(body: string): { code: string | null; message: string } {
  const text = body.trim();
  if (!text.startsWith("{")) return { code: null, message: text };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // The scheduler keeps at most 300 characters of a body: read what is there.
    const code = /"code"\s*:\s*"([^"]{1,80})"/.exec(text)?.[1] ?? null;
    const message = /"(?:message|error)"\s*:\s*"((?:[^"\\]|\\.)*)("?)/.exec(text);
    if (!message) return { code, message: "(an unreadable error body)" };
    return { code, message: message[1]!.replace(/\\(.)/g, "$1") + (message[2] ? "" : "…") };
  }
  if (parsed === null || typeof parsed !== "object") return { code: null, message: text };
  const o = parsed as Record<string, unknown>;
  const inner = o.error !== null && typeof o.error === "object" ? (o.error as Record<string, unknown>) : o;
  const code = typeof inner.code === "string" ? inner.code : null;
  const message = typeof inner.message === "string" ? inner.message : typeof o.error === "string" ? o.error : typeof o.message === "string" ? o.message : null;
  return { code, message: message ?? "(no message in the error body)" };
}

/**
 * Read a request's stored error (the scheduler's text: "worker answered 500: <body>", "worker timed
 * out after 30000 ms", "worker failed: ...", "no service binding ..."). A JSON body gives its own code
 * and message; otherwise the code says which kind of failure it was.
 */
export function describeFailure(error: string | null): FailureText {
  if (error === null || error.trim() === "") return { code: "unknown", message: "(no error recorded)" };
  const answered = ANSWERED.exec(error);
  if (answered) {
    const body = fromBody(answered[2]!);
    return { code: body.code ?? `http_${answered[1]}`, message: body.message === "" ? `the worker answered ${answered[1]}` : body.message };
  }
  if (TIMED_OUT.test(error)) return { code: "timeout", message: error.replace(/^worker /, "") };
  const failed = FAILED.exec(error);
  if (failed) {
    const body = fromBody(failed[1]!);
    return { code: body.code ?? "worker_error", message: body.message };
  }
  if (error.startsWith("no service binding")) return { code: "no_binding", message: error };
  if (error === "worker answered the batch without this request") return { code: "missing_from_batch", message: error };
  const body = fromBody(error);
  return { code: body.code ?? "error", message: body.message };
}
