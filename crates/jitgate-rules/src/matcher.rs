//! The compiled matcher: finds the first route (in file order) that matches a request.
