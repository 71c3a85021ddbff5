/** Benchmark floor: answers 200 and does nothing else. */
export default {
  async fetch(): Promise<Response> {
    return new Response("ok");
  },
} satisfies ExportedHandler;
