//! Replacing the config file for `PUT /v1/admin/rules/source`: refuse a file the gateway must
//! not replace, otherwise replace it atomically, so a crash or a full disk leaves either the old
//! file or the new one, never a mix, and a file watcher never reads a half-written file.
//!
//! Refused (answered 409, nothing written):
//! - a symbolic link: it usually means the file is managed elsewhere (a Kubernetes ConfigMap's
//!   `..data` swap, configuration management), where an edit made here would be overwritten or
//!   would drift; and writing through it would put files in a directory the gateway was not
//!   pointed at. Renaming over it would silently turn the link into a regular file.
//! - a file with no write permission bits (the operator marked it read-only; even when the
//!   gateway runs as root), or one the gateway may not open for writing (permissions, a
//!   read-only file system such as a ConfigMap mount);
//! - anything but a regular file, or a missing file.
//!
//! The replacement is written to a temporary file in the same directory (so the rename stays
//! on one file system) with the old file's mode and, where the gateway may set them, its owner
//! and group; it is fsynced, renamed over the file, and the directory is fsynced so the rename
//! itself survives a power loss. Extended attributes, ACLs and security labels of the old file
//! are not carried over.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Why the file was not replaced; it is unchanged either way.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The gateway must not or cannot replace this file (a link, read-only, missing).
    #[error("{0}")]
    NotWritable(String),
    /// Reading or writing failed otherwise (disk full, I/O error).
    #[error("{0}")]
    Io(String),
}

/// Checks that `path` may be replaced and returns the bytes it holds now.
pub fn read_replaceable(path: &Path) -> Result<Vec<u8>, WriteError> {
    check_replaceable(path)?;
    // Opening for writing (without truncating) is how the kernel tells whether this process
    // may write the file: permissions, a read-only mount, immutable flags.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| classify(path, "open for writing", &e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| WriteError::Io(format!("{}: cannot read: {e}", path.display())))?;
    Ok(bytes)
}

/// Replaces the file at `path` with `bytes` atomically (see the module documentation).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    // Checked again right before writing: the reload lock serialises the gateway's own
    // writers, not other processes.
    let old = check_replaceable(path)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(WriteError::NotWritable(format!(
            "{} has no parent directory",
            path.display()
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    // A dot-name that is not the config's own, so a watcher of the directory ignores it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".jitgate-tmp")
        .tempfile_in(dir)
        .map_err(|e| classify(dir, "create a temporary file in", &e))?;
    keep_owner(tmp.as_file(), &old, path);
    let io = |what: &str, e: io::Error| {
        WriteError::Io(format!(
            "{}: cannot {what} the new file: {e}",
            path.display()
        ))
    };
    tmp.as_file()
        .set_permissions(old.permissions())
        .map_err(|e| io("set the permissions of", e))?;
    tmp.write_all(bytes).map_err(|e| io("write", e))?;
    tmp.as_file().sync_all().map_err(|e| io("fsync", e))?;
    // On failure the temporary file is removed when `PersistError` drops it.
    tmp.persist(path)
        .map_err(|e| classify(path, "rename the new file over", &e.error))?;
    // The new file is in place and what every reader sees from now on, so a failure here is
    // not a failure to replace it (the caller applies what is on disk).
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(
            "{} was replaced, but fsync of its directory failed, so the rename may not survive a crash: {e}",
            path.display()
        );
    }
    Ok(())
}

fn check_replaceable(path: &Path) -> Result<Metadata, WriteError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| classify(path, "inspect", &e))?;
    if meta.file_type().is_symlink() {
        let target =
            std::fs::read_link(path).map_or_else(|_| "?".to_string(), |t| t.display().to_string());
        return Err(WriteError::NotWritable(format!(
            "{} is a symbolic link (to {target}); the gateway does not replace linked config \
             files, which are usually managed elsewhere (a Kubernetes ConfigMap, configuration \
             management): change the file at its source",
            path.display()
        )));
    }
    if !meta.is_file() {
        return Err(WriteError::NotWritable(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.permissions().readonly() {
        return Err(WriteError::NotWritable(format!(
            "{} is read-only (mode {:o}); the gateway does not replace a file marked read-only",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(meta)
}

/// Gives the new file the old one's owner and group where this process may (root may; others
/// may change the group to one of theirs). Otherwise the new file belongs to the gateway's user,
/// who could write the old one anyway.
fn keep_owner(new: &File, old: &Metadata, path: &Path) {
    let Ok(now) = new.metadata() else { return };
    if (now.uid(), now.gid()) == (old.uid(), old.gid()) {
        return;
    }
    let uid = (now.uid() != old.uid()).then_some(old.uid());
    if let Err(e) = std::os::unix::fs::fchown(new, uid, Some(old.gid())) {
        tracing::warn!(
            "{}: the new file keeps owner {}:{} instead of {}:{} ({e})",
            path.display(),
            now.uid(),
            now.gid(),
            old.uid(),
            old.gid()
        );
    }
}

fn classify(path: &Path, what: &str, e: &io::Error) -> WriteError {
    let msg = format!("cannot {what} {}: {e}", path.display());
    match e.kind() {
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::ReadOnlyFilesystem
        | io::ErrorKind::NotFound => WriteError::NotWritable(msg),
        _ => WriteError::Io(msg),
    }
}

#[cfg(test)]
mod tests;
