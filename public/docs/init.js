// /docs: Swagger UI over this worker's own OpenAPI document. A file of its own, since the page's
// content security policy runs no inline script.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  deepLinking: true,
  // Operations open with their parameters and "Try it out" ready; requests go to this origin only.
  tryItOutEnabled: true,
  displayRequestDuration: true,
  // No badge from the public validator service: the page loads nothing from another origin.
  validatorUrl: null,
});
