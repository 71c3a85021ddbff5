/** Money is integer nano-dollars (1e-9 USD) everywhere. */
export const NANO_PER_DOLLAR = 1_000_000_000;

/** Cost of `units` at `costPerUnitNano`; both integers, result exact or an error if it overflows. */
export function costOf(units: number, costPerUnitNano: number): number {
  const cost = units * costPerUnitNano;
  if (!Number.isSafeInteger(cost)) throw new RangeError(`cost overflows: ${units} x ${costPerUnitNano}`);
  return cost;
}

/** Render nano-dollars as a USD string for humans (never used for arithmetic). */
export function formatUsd(nano: number): string {
  const sign = nano < 0 ? "-" : "";
  const abs = Math.abs(nano);
  const dollars = Math.floor(abs / NANO_PER_DOLLAR);
  const frac = String(abs % NANO_PER_DOLLAR).padStart(9, "0").replace(/0+$/, "");
  return `${sign}$${dollars}${frac ? "." + frac.padEnd(2, "0") : ".00"}`;
}
