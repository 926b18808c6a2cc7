//! Write-time checks that look across resources: one plugin per global rule, unique auth keys
//! across consumers and credentials, and agreeing `limit-count` groups.

use crate::AdminState;
use crate::handlers::{ApiError, bad};
use ferry_config::{Kind, PluginChecker};
use serde_json::Value;

/// The collections the checks below read for a write of `value` to `kind`: a write shared
/// with other nodes is committed only if none of them changed meanwhile.
pub(crate) fn checked_kinds(plugins: &dyn PluginChecker, kind: Kind, value: &Value) -> Vec<Kind> {
    let mut kinds = Vec::new();
    if kind == Kind::GlobalRules && value.get("plugins").is_some() {
        kinds.push(Kind::GlobalRules);
    }
    if value.pointer("/plugins/limit-count/group").is_some() {
        kinds.extend(LIMIT_COUNT_HOLDERS);
    }
    if matches!(kind, Kind::Consumers | Kind::Credentials) && !auth_keys(plugins, value).is_empty()
    {
        kinds.push(Kind::Consumers); // credentials live in the same collection
    }
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Where a `limit-count` configuration can be.
const LIMIT_COUNT_HOLDERS: [Kind; 6] = [
    Kind::Routes,
    Kind::Services,
    Kind::PluginConfigs,
    Kind::Consumers,
    Kind::ConsumerGroups,
    Kind::GlobalRules,
];

/// Two global rules may not configure the same plugin.
pub(crate) async fn global_rule_conflict(
    state: &AdminState,
    id: &str,
    value: &Value,
) -> Result<(), ApiError> {
    let Some(mine) = value.get("plugins").and_then(Value::as_object) else {
        return Ok(());
    };
    for r in state.store.list(Kind::GlobalRules).await? {
        if r.id == id {
            continue;
        }
        if let Some(theirs) = r.value.get("plugins").and_then(Value::as_object)
            && let Some(name) = mine.keys().find(|k| theirs.contains_key(*k))
        {
            return Err(bad(format!(
                "plugin '{name}' already exists in global rule with id '{}'",
                r.id
            )));
        }
    }
    Ok(())
}

/// The auth keys a consumer or credential body carries: (plugin, key).
fn auth_keys(plugins: &dyn PluginChecker, value: &Value) -> Vec<(String, String)> {
    value
        .get("plugins")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter_map(|(k, conf)| Some((k.clone(), plugins.consumer_key(k, conf)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// An auth key belongs to one consumer: refused when another consumer, or a credential of
/// another consumer (or another credential, for a credential), already has it.
pub(crate) async fn duplicate_key(
    state: &AdminState,
    kind: Kind,
    id: &str,
    value: &Value,
) -> Result<(), ApiError> {
    let mine = auth_keys(state.plugins.as_ref(), value);
    if mine.is_empty() {
        return Ok(());
    }
    let owner = match kind {
        Kind::Credentials => id.split_once('/').map_or(id, |(u, _)| u),
        _ => id,
    };
    let taken = |theirs: Vec<(String, String)>| mine.iter().find(|m| theirs.contains(m)).cloned();
    for c in state.store.list(Kind::Consumers).await? {
        if c.id == owner {
            continue;
        }
        if let Some((plugin, _)) = taken(auth_keys(state.plugins.as_ref(), &c.value)) {
            return Err(bad(format!(
                "duplicate key of plugin {plugin} found with consumer: {}",
                c.id
            )));
        }
    }
    for c in state.store.list(Kind::Credentials).await? {
        let (user, cid) = c.id.split_once("/credentials/").unwrap_or(("", &c.id));
        let own = match kind {
            Kind::Credentials => c.id == id,
            _ => user == owner,
        };
        if own {
            continue;
        }
        if let Some((plugin, _)) = taken(auth_keys(state.plugins.as_ref(), &c.value)) {
            return Err(bad(format!(
                "duplicate key of plugin {plugin} found with credential: {cid} of consumer: {user}"
            )));
        }
    }
    Ok(())
}

/// `limit-count` configurations that share a `group` share one counter, so they must be the
/// same: compared with every other stored resource of that group (APISIX compares with the
/// first one a worker saw, which refuses updating the group's only member).
pub(crate) async fn group_conflict(
    state: &AdminState,
    kind: Kind,
    id: &str,
    value: &Value,
) -> Result<(), ApiError> {
    let conf_of = |v: &Value| -> Option<(String, Value)> {
        let mut c = v.pointer("/plugins/limit-count")?.clone();
        let group = c.get("group")?.as_str()?.to_string();
        if let Some(o) = c.as_object_mut() {
            o.remove("_meta");
        }
        Some((group, c))
    };
    let Some((group, mine)) = conf_of(value) else {
        return Ok(());
    };
    for k in LIMIT_COUNT_HOLDERS {
        for r in state.store.list(k).await? {
            if k == kind && r.id == id {
                continue;
            }
            if let Some((g, theirs)) = conf_of(&r.value)
                && g == group
                && theirs != mine
            {
                return Err(bad(
                    "failed to check the configuration of plugin limit-count err: group conf mismatched",
                ));
            }
        }
    }
    Ok(())
}
