/**
 * Durable Object ids by name, kept for the isolate's life: `idFromName` hashes the name on every call,
 * and the hot paths ask the same few objects again and again. One per namespace; cleared when full.
 */
export class ObjectIds {
  private readonly ids = new Map<string, DurableObjectId>();

  constructor(private readonly max: number) {}

  of(namespace: Pick<DurableObjectNamespace, "idFromName">, name: string): DurableObjectId {
    let id = this.ids.get(name);
    if (!id) {
      id = namespace.idFromName(name);
      if (this.ids.size >= this.max) this.ids.clear();
      this.ids.set(name, id);
    }
    return id;
  }
}
