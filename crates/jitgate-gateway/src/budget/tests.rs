use super::*;

#[test]
fn the_default_leaves_the_reserve_and_the_admin_plane_and_halves_the_rest() {
    // The common soft limit: (1024 - 64 - 64) / 2.
    assert_eq!(derived_max_connections(Some(1024)), 448);
    assert_eq!(derived_max_connections(Some(512)), 192);
    assert_eq!(derived_max_connections(Some(1_048_576)), 524_224);
}

#[test]
fn a_tiny_or_unlimited_open_file_limit_still_gives_a_usable_budget() {
    assert_eq!(derived_max_connections(Some(0)), 1);
    assert_eq!(derived_max_connections(Some(100)), 1);
    assert_eq!(derived_max_connections(None), UNLIMITED_DEFAULT);
    assert!(derived_max_connections(Some(u64::MAX)) >= 1);
}

#[test]
fn the_open_file_limit_is_readable() {
    // Whatever the machine's limit, reading it needs no privilege and yields a budget.
    assert!(derived_max_connections(open_file_limit()) >= 1);
}
