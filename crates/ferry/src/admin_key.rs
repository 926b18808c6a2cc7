//! The admin key when config.yaml sets none: generated once on first start, kept in the data
//! dir (mode 0600), printed once to stderr. There is no fixed default key.

use ferry_config::app::{AdminKey, AdminRole};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn load_or_create(data_dir: &Path) -> Result<AdminKey, String> {
    let path = data_dir.join("admin_key");
    let key = match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            tracing::info!("admin key read from {}", path.display());
            k.trim().to_string()
        }
        _ => {
            let mut raw = [0u8; 16];
            rand::fill(&mut raw);
            let key: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = data_dir.join("admin_key.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            f.write_all(format!("{key}\n").as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "ferry: no admin key configured; generated one and stored it in {}:\n  {key}",
                path.display()
            );
            key
        }
    };
    Ok(AdminKey {
        name: "admin".into(),
        key,
        role: AdminRole::Admin,
    })
}
