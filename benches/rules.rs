//! Criterion benchmarks for the pure rules code (matching, canonicalisation).
fn main() {}
