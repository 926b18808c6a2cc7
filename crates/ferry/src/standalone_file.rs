//! Standalone, file-driven mode: `apisix.yaml` (or `apisix.json`) is the whole configuration.
//! It is loaded at start and again whenever its content changes (polled, so two writes within
//! one second are both seen); a file without the `#END` marker, with a YAML error or with an
//! unset `${{VAR}}` keeps the previous configuration and logs why. Invalid items are skipped
//! with an error log, as APISIX does.

use ferry_config::PluginChecker;
use ferry_config::document;
use ferry_config::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the file is checked.
const POLL: Duration = Duration::from_millis(250);

/// The file next to the config file: `apisix.yaml`, or `apisix.json`.
pub fn path_for(config: Option<&Path>, json: bool) -> PathBuf {
    let dir = config
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("conf"), Path::to_path_buf);
    dir.join(if json { "apisix.json" } else { "apisix.yaml" })
}

/// Parses the file's text into a document (pure: checks `#END`, substitutes variables).
pub fn parse(text: &str, json: bool) -> Result<Value, String> {
    let body = if json {
        text.to_string()
    } else {
        let tail_start = text.len().saturating_sub(10);
        let tail = text.get(tail_start..).unwrap_or(text);
        if !tail.trim_end().ends_with("#END") {
            return Err("the file does not end with #END (it may be half-written); keeping the previous configuration".into());
        }
        text.to_string()
    };
    let body = ferry_config::app::substitute_env(&body, |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    let doc: Value = if json {
        serde_json::from_str(&body).map_err(|e| format!("invalid JSON: {e}"))?
    } else {
        serde_yaml_ng::from_str(&body).map_err(|e| format!("invalid YAML: {e}"))?
    };
    match doc {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(doc),
        _ => Err("the configuration must be a mapping of resource lists".into()),
    }
}

/// Loads the file into the store once.
pub async fn load(
    path: &Path,
    json: bool,
    store: &dyn Store,
    plugins: &dyn PluginChecker,
) -> Result<usize, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc = parse(&text, json)?;
    let (items, errors) = document::items(&doc, plugins, true);
    for e in &errors {
        tracing::error!(
            file = %path.display(),
            "skipping {}[{}] {}: {}",
            e.resource_type,
            e.index,
            e.resource_id,
            e.error
        );
    }
    let n = items.len();
    store
        .replace_all(items, doc)
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

/// Reloads the file whenever its content changes, until the process ends.
pub async fn follow(
    path: PathBuf,
    json: bool,
    store: Arc<dyn Store>,
    plugins: Arc<dyn PluginChecker>,
    mut last: Option<Vec<u8>>,
) {
    loop {
        tokio::time::sleep(POLL).await;
        let Ok(now) = tokio::fs::read(&path).await else {
            continue;
        };
        if last.as_deref() == Some(now.as_slice()) {
            continue;
        }
        match load(&path, json, store.as_ref(), plugins.as_ref()).await {
            Ok(n) => {
                tracing::info!(file = %path.display(), "configuration reloaded: {n} resources")
            }
            Err(e) => tracing::error!(file = %path.display(), "configuration not reloaded: {e}"),
        }
        last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_and_env() {
        assert!(parse("routes: []\n", false).unwrap_err().contains("#END"));
        let doc = parse("routes:\n  - uri: /a\n#END\n", false).unwrap();
        assert_eq!(doc["routes"][0]["uri"], "/a");
        assert!(
            parse("routes: [\n#END", false)
                .unwrap_err()
                .contains("YAML")
        );
        assert!(parse("a: ${{FERRY_SURELY_UNSET_VAR}}\n#END", false).is_err());
        assert_eq!(parse("#END\n", false).unwrap(), serde_json::json!({}));
        assert_eq!(
            parse("{\"routes\": []}", true).unwrap()["routes"],
            serde_json::json!([])
        );
    }
}
