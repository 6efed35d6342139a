//! Secrets learned on first contact (Asana's `X-Hook-Secret` handshake), kept durably so
//! a restart keeps verifying with them: one file per source under
//! `<spool path>/learned-secrets/`, mode 0600, written to a temporary file, fsynced and
//! renamed, so a crash leaves either no secret or the whole one.
//!
//! Trust on first use: whoever completes the handshake first sets the secret. hookgate
//! accepts a handshake only while the source has no secret at all (none configured, none
//! learned); afterwards it is refused with 409 `secret_already_set` until an operator
//! removes the file (and restarts). Restrict the source with `allow_ips` to the sender's
//! addresses where they are published.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where a state directory keeps learned secrets.
pub struct LearnedSecrets {
    dir: PathBuf,
}

impl LearnedSecrets {
    /// The store under `state_dir` (the spool directory).
    pub fn new(state_dir: &Path) -> LearnedSecrets {
        LearnedSecrets {
            dir: state_dir.join("learned-secrets"),
        }
    }

    /// The file of `source` (a suffix keeps names like `..` ordinary file names).
    pub fn path(&self, source: &str) -> PathBuf {
        self.dir.join(format!("{source}.secret"))
    }

    /// The learned secret of `source`, if one was stored.
    pub fn load(&self, source: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.path(source)) {
            Ok(text) => {
                let secret = text.trim();
                Ok((!secret.is_empty()).then(|| secret.to_owned()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `secret` for `source` durably (mode 0600).
    pub fn store(&self, source: &str, secret: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(source);
        let tmp = self.dir.join(format!("{source}.secret.tmp"));
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp)?;
            f.write_all(secret.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_secret_loads_back_and_names_stay_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LearnedSecrets::new(dir.path());
        assert_eq!(store.load("asana").unwrap(), None);
        store.store("asana", "9a2f1d6c").unwrap();
        assert_eq!(store.load("asana").unwrap().as_deref(), Some("9a2f1d6c"));
        assert!(store
            .path("..")
            .starts_with(dir.path().join("learned-secrets")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(store.path("asana"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
