#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::Path;

use super::{read_replaceable, replace, WriteError};

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn replaces_the_content_and_keeps_the_mode_leaving_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    fs::write(&path, "old = 1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let inode_before = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());

    assert_eq!(read_replaceable(&path).unwrap(), b"old = 1\n");
    replace(&path, b"new = 2\n").unwrap();

    assert_eq!(fs::read(&path).unwrap(), b"new = 2\n");
    assert_eq!(mode(&path), 0o640);
    assert_eq!(names(dir.path()), ["proxy.toml"]);
    // A new inode renamed into place, not the old file rewritten in place: a reader holding
    // the old file open keeps reading the old bytes whole.
    let inode_after = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
    assert_ne!(inode_before, inode_after);
}

#[test]
fn a_reader_of_the_old_file_sees_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    fs::write(&path, "a".repeat(10_000)).unwrap();
    let mut held = fs::File::open(&path).unwrap();
    replace(&path, b"b").unwrap();
    let mut old = String::new();
    std::io::Read::read_to_string(&mut held, &mut old).unwrap();
    assert_eq!(old, "a".repeat(10_000));
    assert_eq!(fs::read(&path).unwrap(), b"b");
}

#[test]
fn a_symbolic_link_is_refused_and_neither_it_nor_its_target_changes() {
    let dir = tempfile::tempdir().unwrap();
    // The Kubernetes ConfigMap layout: proxy.toml -> ..data/proxy.toml, ..data -> ..2026_01.
    let real = dir.path().join("..2026_01");
    fs::create_dir(&real).unwrap();
    fs::write(real.join("proxy.toml"), "old = 1\n").unwrap();
    symlink("..2026_01", dir.path().join("..data")).unwrap();
    let path = dir.path().join("proxy.toml");
    symlink("..data/proxy.toml", &path).unwrap();

    for result in [read_replaceable(&path).map(|_| ()), replace(&path, b"new")] {
        match result {
            Err(WriteError::NotWritable(m)) => {
                assert!(m.contains("symbolic link"), "{m}");
                assert!(m.contains("..data/proxy.toml"), "{m}");
            }
            other => panic!("a linked config was not refused: {other:?}"),
        }
    }
    assert!(fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(&path).unwrap(), b"old = 1\n");
    assert_eq!(names(dir.path()), ["..2026_01", "..data", "proxy.toml"]);
}

#[test]
fn a_read_only_file_is_refused_unchanged_even_for_root() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    fs::write(&path, "old = 1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o444)).unwrap();

    for result in [read_replaceable(&path).map(|_| ()), replace(&path, b"new")] {
        match result {
            Err(WriteError::NotWritable(m)) => assert!(m.contains("read-only"), "{m}"),
            other => panic!("a read-only config was not refused: {other:?}"),
        }
    }
    assert_eq!(fs::read(&path).unwrap(), b"old = 1\n");
    assert_eq!(mode(&path), 0o444);
    assert_eq!(names(dir.path()), ["proxy.toml"]);
}

#[test]
fn a_missing_file_or_a_directory_is_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("proxy.toml");
    assert!(matches!(
        replace(&missing, b"x"),
        Err(WriteError::NotWritable(_))
    ));
    assert!(matches!(
        read_replaceable(&missing),
        Err(WriteError::NotWritable(_))
    ));
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    match replace(&sub, b"x") {
        Err(WriteError::NotWritable(m)) => assert!(m.contains("not a regular file"), "{m}"),
        other => panic!("a directory was not refused: {other:?}"),
    }
    assert_eq!(names(dir.path()), ["sub"]);
    assert!(names(&sub).is_empty());
}
