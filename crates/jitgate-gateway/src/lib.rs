//! The jitgate data plane (listeners, TLS, canonical forwarding) and admin plane
//! (health, rule table, reload).
#![forbid(unsafe_code)]
