"""The routes: thin blueprints (pages, the JSON API, batches, comparisons), the error handlers and the OpenAPI
document; the work is in web.service."""
