import { DAY_MS, monthStart, nextMonthStart } from "./calendar";

/**
 * Which clients are closest to their monthly budget, and where this month's rate takes them by its
 * end. Pure; money is integer nano-dollars and every ratio is compared by cross-multiplying BigInts,
 * so the order and the projection are exact whatever the amounts.
 */

/** The shortest stretch of the month a projection extrapolates from: one day, so that the first minutes of a month do not multiply a single request by thousands. */
export const PROJECTION_MIN_BASIS_MS = DAY_MS;

export interface ClientSpend {
  client_id: string;
  /** The budget that applies (resolveBudget); null = no limit. */
  budget_nano: number | null;
  /** Spent this month (UTC). */
  spent_nano: number;
}

export interface BudgetRisk {
  client_id: string;
  budget_nano: number;
  spent_nano: number;
  /** Budget used, in tenths of a percent, rounded down (999 = 99.9%); null when the budget is 0. */
  used_permille: number | null;
  /** Month-end spend at this month's rate: spent × month length / max(elapsed, one day), rounded down. */
  projected_nano: number;
  /** The projection passes the budget. */
  projected_overrun: boolean;
}

/** Month-end spend at the rate so far: `spent × month / basis`, where basis = time elapsed this month, at least one day (and at most the month). Exact, rounded down. */
export function projectMonthEnd(spentNano: number, now: number): number {
  const start = monthStart(now);
  const length = nextMonthStart(now) - start;
  const basis = Math.min(length, Math.max(now - start, PROJECTION_MIN_BASIS_MS));
  return Number((BigInt(spentNano) * BigInt(length)) / BigInt(basis));
}

export function usedPermille(spentNano: number, budgetNano: number): number | null {
  if (budgetNano <= 0) return null;
  return Number((BigInt(spentNano) * 1000n) / BigInt(budgetNano));
}

/** spent / budget as a fraction; a zero budget with spending is past any ratio (null), without spending it is 0. */
function useOf(x: { budget_nano: number; spent_nano: number }): { num: bigint; den: bigint } | null {
  if (x.budget_nano > 0) return { num: BigInt(x.spent_nano), den: BigInt(x.budget_nano) };
  return x.spent_nano > 0 ? null : { num: 0n, den: 1n };
}

/** Closest to the limit first: by spent / budget, highest first (exact). Ties: more spent first, then by id. */
export function compareRisk(a: { client_id: string; budget_nano: number; spent_nano: number }, b: typeof a): number {
  const [ua, ub] = [useOf(a), useOf(b)];
  if (ua === null || ub === null) {
    if (ua !== ub) return ua === null ? -1 : 1;
  } else {
    const left = ua.num * ub.den;
    const right = ub.num * ua.den;
    if (left !== right) return left > right ? -1 : 1;
  }
  if (a.spent_nano !== b.spent_nano) return b.spent_nano - a.spent_nano;
  return a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0;
}

export interface RiskRanking {
  /** Clients with a budget (zero included), counted whether shown or not. */
  with_budget: number;
  /** Clients without a limit: never at risk, not ranked. */
  without_limit: number;
  /** The `limit` clients closest to their budget, closest first. */
  top: BudgetRisk[];
}

/** Rank every client with a budget by risk and keep the first `limit`, each with its percentage and projection. */
export function rankByRisk(clients: ClientSpend[], now: number, limit: number): RiskRanking {
  const limited = clients.filter((c): c is ClientSpend & { budget_nano: number } => c.budget_nano !== null);
  const top = [...limited].sort(compareRisk).slice(0, limit).map((c): BudgetRisk => {
    const projected = projectMonthEnd(c.spent_nano, now);
    return {
      client_id: c.client_id, budget_nano: c.budget_nano, spent_nano: c.spent_nano,
      used_permille: usedPermille(c.spent_nano, c.budget_nano), projected_nano: projected, projected_overrun: projected > c.budget_nano,
    };
  });
  return { with_budget: limited.length, without_limit: clients.length - limited.length, top };
}
