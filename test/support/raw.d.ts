/** Vite's `?raw` imports: a file's text (the ops/ files the metrics test checks against /metrics). */
declare module "*?raw" {
  const text: string;
  export default text;
}
