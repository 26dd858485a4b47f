//! `jitgate`: the gateway binary and its CLI.

fn main() {}
