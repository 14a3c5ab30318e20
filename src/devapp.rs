//! The development app: when no `[[apps]]` is configured, `tern` runs one app (id 10000)
//! whose random secret is created once and kept in `data_dir/dev-app.toml`, so restarts
//! keep working signatures and no secret is ever hard-coded.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tern_logic::AppConfig;

/// The development app's id (the original system's customary first app id).
pub const DEV_APP_ID: u32 = 10_000;

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("dev-app.toml")
}

/// Loads the development app, creating it (and the data dir) when `create` is set.
pub fn load_or_create(data_dir: &Path, create: bool) -> anyhow::Result<AppConfig> {
    let file = path(data_dir);
    if file.exists() {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        return toml::from_str(&text).with_context(|| format!("parsing {}", file.display()));
    }
    anyhow::ensure!(
        create,
        "no [[apps]] configured and no development app in {}: configure apps (same file as `tern logic`) or start `tern logic` with this data dir first",
        file.display()
    );
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let secret: String = rand::thread_rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect();
    let app = AppConfig::new(DEV_APP_ID, secret);
    let text = format!(
        "# Development app created by `tern` because no [[apps]] are configured. Keep it secret.\n{}",
        toml::to_string(&app)?
    );
    // Write then rename: a crash never leaves a half-written secret behind.
    let tmp = file.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::rename(&tmp, &file).with_context(|| format!("creating {}", file.display()))?;
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_or_create(dir.path(), false).is_err());
        let a = load_or_create(dir.path(), true).unwrap();
        assert_eq!(a.id, DEV_APP_ID);
        assert_eq!(a.secret.len(), 32);
        let b = load_or_create(dir.path(), false).unwrap();
        assert_eq!(a, b);
        let c = load_or_create(tempfile::tempdir().unwrap().path(), true).unwrap();
        assert_ne!(a.secret, c.secret, "secrets are random");
    }
}
