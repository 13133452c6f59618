"""HTTP: the app factory, the routes, their dependencies, middleware, errors, auth, the spec and the page."""
