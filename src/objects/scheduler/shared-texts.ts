/**
 * One copy in memory of the texts and parsed plans that many live requests share. A template's requests
 * mostly carry the same plan and estimate: kept per request, a 10,000-request backlog held 10,000
 * identical plan texts (2.6 MB), as many parsed plans, and as many copies of its estimate, template and
 * client ids. Bounded: past SHARED_MAX distinct texts a table starts over (the rows keep what they hold;
 * only the sharing with earlier rows stops), so unique texts (a plan with a per-request cache key) cost
 * a map entry each for a while, never memory that grows.
 */
import type { Row } from "./rows";
import type { StoredPlan } from "./types";

const SHARED_MAX = 2048;
/** A row's texts that repeat across requests (tier, queue and status have a few values each). */
const REPEATED = ["client_id", "template", "plan", "estimate_detail", "tier", "queue", "status"] as const;

export class SharedTexts {
  private readonly texts = new Map<string, string>();
  private readonly plans = new Map<string, StoredPlan>();

  /** The copy kept of this text (this one, the first time). */
  text<T extends string | null>(s: T): T {
    if (s === null) return s;
    const kept = this.texts.get(s);
    if (kept !== undefined) return kept as T;
    if (this.texts.size >= SHARED_MAX) this.texts.clear();
    this.texts.set(s, s);
    return s;
  }

  /** A row read from the table, its repeated texts replaced by the copies kept. */
  row(row: Row): Row {
    for (const k of REPEATED) (row as Record<string, unknown>)[k] = this.text(row[k]);
    return row;
  }

  /**
   * The plan of this text, never to be changed in place (callers copy to change one): `parsed`, or the
   * text parsed, the first time; the same object after.
   */
  plan(text: string, parsed?: StoredPlan): StoredPlan {
    const kept = this.plans.get(text);
    if (kept) return kept;
    if (this.plans.size >= SHARED_MAX) this.plans.clear();
    const plan = parsed ?? (JSON.parse(text) as StoredPlan);
    this.plans.set(text, plan);
    return plan;
  }
}
