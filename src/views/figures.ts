import { html } from "hono/html";
import { exactMoney, formatCents, relativeTime, utcText } from "../domain/display";

/** Figures as markup: the readable form shown, the exact one in the tooltip and a data attribute. */

export const int = (n: number) => Math.round(n).toLocaleString("en-US");
export const percent = (x: number) => `${(x * 100).toFixed(1)}%`;

/** Money to the cent; the exact nano-dollars on hover. */
export function money(nano: number) {
  return html`<span class="money" data-nano="${nano}" title="${exactMoney(nano)}">${formatCents(nano)}</span>`;
}

/** "3 min ago", with the UTC time on hover; "never" for no time. */
export function when(ms: number | null, now: number) {
  if (ms === null) return "never";
  return html`<time datetime="${new Date(ms).toISOString()}" title="${utcText(ms)}">${relativeTime(ms, now)}</time>`;
}

/** A wait or age for humans: "45 s", "3 min 20 s", "2 h 5 min". */
export function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
