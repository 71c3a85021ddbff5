/** A pool's capacity changed by the scaling policy. */
export interface ScalingEvent {
  pool: string;
  at: number;
  from_capacity: number;
  to_capacity: number;
  reason: string;
}

/**
 * The latest scaling events, newest first. Pools are sized statically so far (no autoscaler writes
 * any), so the list is empty; the dashboard shows it as such. The autoscaler's history reads here.
 */
export async function recentScalingEvents(_env: Env, _limit: number): Promise<ScalingEvent[]> {
  return [];
}
