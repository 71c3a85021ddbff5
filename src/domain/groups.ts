/**
 * Lists by key, appended in place. Copying a group's list for each item added (`[...(m.get(k) ?? []), x]`)
 * made a group of k items allocate ~k^2/2 slots: 18% of a drain's allocations, a chunk being mostly one
 * client and one template.
 */

/** Add `item` to the list at `key` (made when missing). */
export function appendTo<K, T>(map: Map<K, T[]>, key: K, item: T): void {
  const list = map.get(key);
  if (list) list.push(item);
  else map.set(key, [item]);
}

/** The items by key: each group in the items' order, the groups in order of first appearance. */
export function groupBy<T, K = string>(items: Iterable<T>, key: (t: T) => K): Map<K, T[]> {
  const map = new Map<K, T[]>();
  for (const item of items) appendTo(map, key(item), item);
  return map;
}
