/* /docs: Swagger UI from rota's own assets (swagger-ui-dist, installed by
   `rota assets`), configured from the JSON block the page carries. A file, not
   an inline script: the Content-Security-Policy runs no inline code. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("swagger-settings").textContent);
  var csrf = document.body.dataset.csrfToken;
  config.dom_id = "#swagger-ui";
  config.presets = [window.SwaggerUIBundle.presets.apis];
  config.requestInterceptor = function (req) {
    if (csrf) { req.headers["X-CSRFToken"] = csrf; }
    return req;
  };
  window.SwaggerUIBundle(config);
})();
