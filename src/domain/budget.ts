/**
 * Monthly budgets. Pure: amounts are integer nano-dollars, the clock is a parameter. A month is the
 * calendar month in UTC; spend is kept per month key, so a new month starts at zero without any job.
 */
import { monthKey, nextMonthStart } from "./calendar";

/** Where a client's budget comes from. `unset`: nothing configured, so nothing may be spent. */
export type BudgetSource = "client" | "tier" | "unlimited" | "unset";

export interface BudgetLimit {
  /** Nano-dollars per month; null = no limit (only when an operator said so). */
  limitNano: number | null;
  source: BudgetSource;
}

export interface BudgetSettings {
  /** A row of client_budgets: present when an admin set this client's budget (null value = unlimited). */
  override?: { monthlyBudgetNano: number | null } | null;
  clientBudgetNano: number | null;
  tierBudgetNano: number | null;
}

/** The budget that applies: an admin's setting, else the client's own, else its tier's, else none. */
export function resolveBudget(s: BudgetSettings): BudgetLimit {
  if (s.override) {
    return s.override.monthlyBudgetNano === null
      ? { limitNano: null, source: "unlimited" }
      : { limitNano: s.override.monthlyBudgetNano, source: "client" };
  }
  if (s.clientBudgetNano !== null) return { limitNano: s.clientBudgetNano, source: "client" };
  if (s.tierBudgetNano !== null) return { limitNano: s.tierBudgetNano, source: "tier" };
  return { limitNano: 0, source: "unset" };
}

export interface BudgetView {
  month: string;
  budget_nano: number | null;
  budget_source: BudgetSource;
  spent_nano: number;
  in_flight_nano: number;
  /** What may still be admitted: budget - spent - in flight, never below 0; null without a limit. */
  remaining_nano: number | null;
  /** When this month's spend resets: the first millisecond of next month, UTC. */
  resets_at: number;
}

export function budgetView(limit: BudgetLimit, spentNano: number, inFlightNano: number, now: number): BudgetView {
  return {
    month: monthKey(now),
    budget_nano: limit.limitNano,
    budget_source: limit.source,
    spent_nano: spentNano,
    in_flight_nano: inFlightNano,
    remaining_nano: limit.limitNano === null ? null : Math.max(0, limit.limitNano - spentNano - inFlightNano),
    resets_at: nextMonthStart(now),
  };
}

/** Whether a request of `estimateNano` fits: spent + in flight + estimate must not exceed the budget. */
export function fitsBudget(limit: BudgetLimit, spentNano: number, inFlightNano: number, estimateNano: number): boolean {
  return limit.limitNano === null || spentNano + inFlightNano + estimateNano <= limit.limitNano;
}
