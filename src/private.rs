//! Files only their owner may read: the store (every lead's personal data, the unsubscribe key)
//! and the outbox of the file transport (every email sent).
//!
//! Modes are set explicitly with `chmod`, which the umask does not filter, so the result is the
//! same under a permissive umask (`000`) as under a strict one. A folder is `0700`: no other
//! user can list it or open anything inside, whatever the modes of the files in it. A file is
//! `0600`, so it stays private when copied out with its mode (`cp -p`, a backup).

use std::fs::Permissions;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// The mode of a private folder.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a private file.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) owner-only, or makes an existing one owner-only.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Makes the file `path` owner-only (read and write).
pub fn private_file(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
}

/// Makes `dir` and everything in it owner-only: folders `0700`, files `0600`. Symbolic links
/// are left alone (their target is not ours to change).
pub fn private_tree(dir: &Path) -> io::Result<()> {
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            private_tree(&entry.path())?;
        } else if !kind.is_symlink() {
            private_file(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_and_files_end_owner_only_whatever_they_were() {
        let dir = std::env::temp_dir().join(format!("nurture-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let nested = dir.join("store");
        private_dir(&nested).unwrap();
        assert_eq!(mode(&nested), DIR_MODE);
        // A folder and files left world-readable (an older nurture, a permissive umask).
        std::fs::create_dir_all(nested.join("blobs")).unwrap();
        std::fs::write(nested.join("db"), b"leads").unwrap();
        std::fs::write(nested.join("blobs/1"), b"blob").unwrap();
        for path in [nested.clone(), nested.join("blobs")] {
            std::fs::set_permissions(&path, Permissions::from_mode(0o777)).unwrap();
        }
        for path in [nested.join("db"), nested.join("blobs/1")] {
            std::fs::set_permissions(&path, Permissions::from_mode(0o666)).unwrap();
        }
        private_tree(&nested).unwrap();
        assert_eq!(mode(&nested), DIR_MODE);
        assert_eq!(mode(&nested.join("blobs")), DIR_MODE);
        assert_eq!(mode(&nested.join("db")), FILE_MODE);
        assert_eq!(mode(&nested.join("blobs/1")), FILE_MODE);
        // An existing folder is tightened too.
        private_dir(&nested).unwrap();
        assert_eq!(mode(&nested), DIR_MODE);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
