// Swagger UI on the local spec; a signed-in console user's token is offered automatically.
(function () {
  const el = document.getElementById('swagger-ui');
  const ui = window.SwaggerUIBundle({
    url: el.dataset.specUrl,
    dom_id: '#swagger-ui',
    deepLinking: true,
    persistAuthorization: true,
    requestInterceptor: (req) => {
      try {
        const session = JSON.parse(localStorage.getItem('ec.auth') || 'null');
        if (session && session.access_token && !req.headers.Authorization) {
          req.headers.Authorization = 'Bearer ' + session.access_token;
        }
      } catch (e) { /* no stored session */ }
      return req;
    },
  });
  window.ui = ui;
})();
