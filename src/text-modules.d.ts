/** Text modules: wrangler's default rule bundles an imported *.txt file as its text (the docs' vendored Swagger UI). */
declare module "*.txt" {
  const text: string;
  export default text;
}
