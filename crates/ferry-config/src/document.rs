//! The standalone configuration document (APISIX's `apisix.yaml` and `PUT /apisix/admin/configs`
//! body): its types, versions and items, turned into store resources with every item checked.

use crate::resource::{Kind, PluginChecker, id_string, validate};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Every array a document may hold, and the resource kind it maps to (`None`: Ferry has no
/// such resource, so the array must be empty).
pub const TYPES: [(&str, Option<Kind>); 12] = [
    ("routes", Some(Kind::Routes)),
    ("services", Some(Kind::Services)),
    ("upstreams", Some(Kind::Upstreams)),
    ("ssls", Some(Kind::Ssls)),
    ("consumers", Some(Kind::Consumers)),
    ("global_rules", Some(Kind::GlobalRules)),
    ("plugin_metadata", Some(Kind::PluginMetadata)),
    ("plugin_configs", Some(Kind::PluginConfigs)),
    ("consumer_groups", Some(Kind::ConsumerGroups)),
    ("protos", None),
    ("secrets", None),
    ("stream_routes", None),
];

/// One item the document could not use.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemError {
    pub resource_type: String,
    pub resource_id: String,
    pub index: usize,
    pub error: String,
}

impl ItemError {
    pub fn message(&self) -> String {
        self.error.clone()
    }
}

/// A resource to store: kind, store id, value.
pub type Item = (Kind, String, Value);

/// Converts a document's arrays into store items. Invalid items are reported and left out.
/// `auto_ids`: items without an id get `arr_<n>` (file mode, as APISIX); otherwise a missing
/// id is an error.
pub fn items(
    doc: &Value,
    plugins: &dyn PluginChecker,
    auto_ids: bool,
) -> (Vec<Item>, Vec<ItemError>) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let Some(obj) = doc.as_object() else {
        errors.push(ItemError {
            resource_type: String::new(),
            resource_id: String::new(),
            index: 0,
            error: "invalid request body: the configuration must be an object".into(),
        });
        return (out, errors);
    };
    for (ty, kind) in TYPES {
        let arr = match obj.get(ty) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            Some(_) => {
                errors.push(ItemError {
                    resource_type: ty.into(),
                    resource_id: String::new(),
                    index: 0,
                    error: format!("invalid {ty}: expected an array"),
                });
                continue;
            }
        };
        let Some(kind) = kind else {
            if !arr.is_empty() {
                errors.push(ItemError {
                    resource_type: ty.into(),
                    resource_id: String::new(),
                    index: 0,
                    error: format!("Ferry has no {ty}: the list must be empty"),
                });
            }
            continue;
        };
        let mut seen = HashSet::new();
        for (index, raw) in arr.iter().enumerate() {
            let fail = |id: &str, error: String| ItemError {
                resource_type: ty.into(),
                resource_id: id.into(),
                index,
                error,
            };
            match item(kind, raw, index, plugins, auto_ids) {
                Ok((k, id, value)) => {
                    if !seen.insert((k, id.clone())) {
                        let what = if k == Kind::Consumers {
                            "username"
                        } else {
                            "id"
                        };
                        errors.push(fail(&id, format!("found duplicate {what} {id} in {ty}")));
                        continue;
                    }
                    out.push((k, id, value));
                }
                Err((id, e)) => errors.push(fail(&id, e)),
            }
        }
    }
    (out, errors)
}

fn item(
    kind: Kind,
    raw: &Value,
    index: usize,
    plugins: &dyn PluginChecker,
    auto_ids: bool,
) -> Result<Item, (String, String)> {
    let mut value = raw.clone();
    let Some(obj) = value.as_object_mut() else {
        return Err((
            String::new(),
            "invalid configuration: wrong type: expected object".into(),
        ));
    };
    obj.remove("modifiedIndex");
    let given = obj.get("id").and_then(id_string);
    let (kind, id) = match kind {
        Kind::Consumers => match given.as_deref().and_then(|g| g.split_once("/credentials/")) {
            Some((user, cid)) => {
                let (user, cid) = (user.to_string(), cid.to_string());
                obj.insert("id".into(), Value::String(cid.clone()));
                (Kind::Credentials, Kind::credential_id(&user, &cid))
            }
            None => {
                obj.remove("id");
                let user = obj
                    .get("username")
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| {
                        (
                            String::new(),
                            "invalid configuration: property \"username\" is required".to_string(),
                        )
                    })?;
                (Kind::Consumers, user)
            }
        },
        Kind::PluginMetadata => {
            obj.remove("id");
            let name = given.ok_or_else(|| (String::new(), "missing plugin name".to_string()))?;
            if !plugins.has(&name) {
                return Err((name, "invalid plugin name".into()));
            }
            (kind, name)
        }
        _ => match given {
            Some(id) => (kind, id),
            None if auto_ids => {
                let id = format!("arr_{index}");
                obj.insert("id".into(), Value::String(id.clone()));
                (kind, id)
            }
            None => return Err((String::new(), format!("missing {} id", kind.noun()))),
        },
    };
    validate(kind, &value, plugins).map_err(|e| (id.clone(), e))?;
    Ok((kind, id, value))
}

/// `<type>_conf_version` of `doc` for `ty`: `Ok(None)` when absent.
pub fn version(doc: &Map<String, Value>, ty: &str) -> Result<Option<u64>, String> {
    match doc.get(&format!("{ty}_conf_version")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| format!("{ty}_conf_version must be a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PluginCheckError;
    use serde_json::json;

    struct P;
    impl PluginChecker for P {
        fn check(&self, name: &str, c: &Value) -> Result<Value, PluginCheckError> {
            match name {
                "echo" => Ok(c.clone()),
                _ => Err(PluginCheckError::Unknown),
            }
        }
        fn names(&self) -> Vec<String> {
            vec!["echo".into()]
        }
    }

    #[test]
    fn items_ids_and_errors() {
        let doc = json!({
            "routes": [
                {"id": "r1", "uri": "/a", "plugins": {"echo": {}}, "modifiedIndex": 3},
                {"uri": "/b", "upstream_id": "u1"},
                {"id": "r1", "uri": "/c", "upstream_id": "u1"},
                {"id": "r3", "uri": "/d", "plugins": {"invalid-plugin": {}}}
            ],
            "consumers": [{"username": "jack"}, {"id": "jack/credentials/c1", "plugins": {}}],
            "plugin_metadata": [{"id": "echo", "log_format": {"a": "$b"}}],
            "stream_routes": []
        });
        let (items, errors) = items(&doc, &P, false);
        let ids: Vec<_> = items
            .iter()
            .map(|(k, id, _)| (k.as_str(), id.as_str()))
            .collect();
        assert_eq!(
            ids,
            vec![
                ("routes", "r1"),
                ("consumers", "jack"),
                ("credentials", "jack/credentials/c1"),
                ("plugin_metadata", "echo")
            ]
        );
        assert_eq!(items[0].2.get("modifiedIndex"), None);
        assert_eq!(items[2].2["id"], "c1");
        assert_eq!(items[3].2, json!({"log_format": {"a": "$b"}}));
        let msgs: Vec<_> = errors.iter().map(|e| (e.index, e.error.as_str())).collect();
        assert_eq!(
            msgs,
            vec![
                (1, "missing route id"),
                (2, "found duplicate id r1 in routes"),
                (3, "unknown plugin [invalid-plugin]")
            ]
        );
        let (auto, errors) = super::items(
            &json!({"routes": [{"uri": "/b", "upstream_id": "u"}]}),
            &P,
            true,
        );
        assert!(errors.is_empty());
        assert_eq!(auto[0].1, "arr_0");
    }
}
