import type { ErrorBody } from "../../errors";
import type { Failure } from "./types";

/** A refusal in the error envelope's shape, as every pool method answers one. */
export function fail(code: ErrorBody["code"], message: string, details?: Record<string, unknown>): Failure {
  return { ok: false, error: details ? { code, message, details } : { code, message } };
}

/** Levels and utilization as views show them: three decimals. */
export function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
