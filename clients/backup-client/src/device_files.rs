//! The files of a device directory, as the backup sees them: regular files
//! under the root, by relative path with `/` separators, in a stable order.

use std::io;
use std::path::{Component, Path, PathBuf};

/// One regular file under the device root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFile {
    /// Relative path with `/` separators.
    pub path: String,
    pub size: u64,
    /// Modification time in Unix nanoseconds (0 if the platform has none).
    pub modified_ns: i64,
}

/// Lists every regular file under `root`, sorted by path. Symbolic links and
/// special files are skipped: a backup holds file contents only.
pub fn list(root: &Path) -> io::Result<Vec<DeviceFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(relative) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&relative))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let relative = relative.join(entry.file_name());
            if kind.is_dir() {
                dirs.push(relative);
            } else if kind.is_file() {
                let Some(path) = relative.to_str() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("file name is not UTF-8: {}", relative.display()),
                    ));
                };
                let metadata = entry.metadata()?;
                let modified_ns = metadata
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as i64);
                files.push(DeviceFile {
                    path: path.replace(std::path::MAIN_SEPARATOR, "/"),
                    size: metadata.len(),
                    modified_ns,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Turns a path from a manifest into a path under `root`, refusing anything
/// that could escape it (absolute paths, `..`, empty components).
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\\') {
        return None;
    }
    let mut out = root.to_path_buf();
    for part in path.split('/') {
        match Path::new(part).components().next() {
            Some(Component::Normal(name)) if name == part => out.push(name),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keeps_paths_inside_the_root() {
        let root = Path::new("/r");
        assert_eq!(resolve(root, "a/b.txt"), Some(PathBuf::from("/r/a/b.txt")));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            ".",
            "a\\b",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn list_finds_nested_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("Media/b")).unwrap();
        std::fs::write(dir.path().join("z.db"), b"12345").unwrap();
        std::fs::write(dir.path().join("Media/b/x.jpg"), b"1").unwrap();
        std::fs::write(dir.path().join("Media/a.ogg"), b"").unwrap();
        let files = list(dir.path()).unwrap();
        let paths: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.size)).collect();
        assert_eq!(
            paths,
            [("Media/a.ogg", 0), ("Media/b/x.jpg", 1), ("z.db", 5)]
        );
    }
}
