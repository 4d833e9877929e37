//! The one rule for relative paths in config files, in both programs: relative to the
//! directory of the file that names them, so a config means the same thing whatever
//! directory the program starts in.
use std::path::{Path, PathBuf};

/// `path` as written in a config file in `dir`: unchanged when absolute or empty, else
/// joined to `dir`.
pub fn relative_to(dir: &Path, path: &Path) -> PathBuf {
    if path.is_relative() && !path.as_os_str().is_empty() {
        dir.join(path)
    } else {
        path.to_path_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_join_the_file_directory() {
        let etc = Path::new("/etc/vigia");
        assert_eq!(relative_to(etc, Path::new("ca.pem")), etc.join("ca.pem"));
        assert_eq!(relative_to(etc, Path::new("../x")), etc.join("../x"));
        assert_eq!(
            relative_to(etc, Path::new("/var/lib/vigia")),
            Path::new("/var/lib/vigia")
        );
        assert_eq!(relative_to(etc, Path::new("")), Path::new(""));
    }
}
