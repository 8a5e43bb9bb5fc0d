// Swagger UI of /docs: settings from the page, and the session's CSRF token on
// "Try it out" requests (the API checks it for a logged-in browser's POSTs).
(function () {
  const config = JSON.parse(document.getElementById("swagger-settings").textContent);
  const csrf = document.body.dataset.csrfToken;
  config.dom_id = "#swagger-ui";
  config.presets = [SwaggerUIBundle.presets.apis];
  config.requestInterceptor = (req) => {
    if (csrf) req.headers["X-CSRFToken"] = csrf;
    return req;
  };
  SwaggerUIBundle(config);
})();
