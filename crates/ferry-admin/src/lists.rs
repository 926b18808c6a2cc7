//! Lists as APISIX answers them: the filters (`name`, `label`, `uri`, `filter`), `total`
//! before paging, then `page` / `page_size`.

use crate::handlers::{ApiError, bad, item};
use axum::Json;
use axum::response::{IntoResponse, Response};
use ferry_config::resource::id_string;
use ferry_config::store::Record;
use serde_json::{Value, json};
use std::collections::HashMap;

fn regex(q: &HashMap<String, String>, key: &str) -> Result<Option<regex::Regex>, ApiError> {
    q.get(key)
        .map(|p| regex::Regex::new(p).map_err(|e| bad(format!("invalid {key} regex: {e}"))))
        .transpose()
}

/// APISIX's list filters (`name`, `label`, `uri`, `filter`) then paging (`page`, `page_size`).
pub(crate) fn filtered(
    mut rs: Vec<Record>,
    q: &HashMap<String, String>,
) -> Result<(usize, Vec<Record>), ApiError> {
    let name = regex(q, "name")?;
    let uri = regex(q, "uri")?;
    let label = q.get("label");
    let exact: Vec<(String, String)> = q
        .get("filter")
        .map(|f| {
            url::form_urlencoded::parse(f.as_bytes())
                .filter(|(k, _)| k == "service_id" || k == "upstream_id")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    rs.retain(|r| {
        let v = &r.value;
        if let Some(re) = &name
            && !v
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| re.is_match(n))
        {
            return false;
        }
        if let Some(l) = label
            && !v
                .get("labels")
                .and_then(Value::as_object)
                .is_some_and(|m| !l.is_empty() && m.contains_key(l))
        {
            return false;
        }
        if let Some(re) = &uri {
            let mut all = v
                .get("uris")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            all.extend(v.get("uri").cloned());
            if !all.iter().filter_map(Value::as_str).any(|u| re.is_match(u)) {
                return false;
            }
        }
        exact
            .iter()
            .all(|(k, want)| v.get(k).and_then(id_string).as_deref() == Some(want.as_str()))
    });
    let total = rs.len();
    let num = |k: &str| q.get(k).and_then(|s| s.parse::<i64>().ok());
    if let (Some(page), Some(size)) = (q.get("page"), num("page_size")) {
        if !(10..=500).contains(&size) {
            return Err(bad("page_size must be between 10 and 500"));
        }
        let page = page.parse::<i64>().ok().filter(|p| *p >= 1).unwrap_or(1);
        rs.sort_by_key(|r| r.create_rev);
        let start = ((page - 1) * size) as usize;
        rs = rs.into_iter().skip(start).take(size as usize).collect();
    }
    Ok((total, rs))
}

pub(crate) fn list_answer(prefix: &str, total: usize, rs: &[Record]) -> Response {
    let list: Vec<Value> = rs.iter().map(|r| item(prefix, r)).collect();
    Json(json!({"total": total, "list": list})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_config::Kind;

    fn rec(id: &str, v: Value, rev: u64) -> Record {
        Record {
            kind: Kind::Routes,
            id: id.into(),
            value: v,
            create_rev: rev,
            mod_rev: rev,
        }
    }

    #[test]
    fn filters_and_paging() {
        let rs: Vec<Record> = (1..=25)
            .map(|i| {
                rec(
                    &i.to_string(),
                    json!({"uri": format!("/r{i}"), "name": format!("n{i}"), "labels": {"k": "v"}, "service_id": if i % 2 == 0 { "s" } else { "t" }}),
                    i,
                )
            })
            .chain([rec("x", json!({"uris": ["/x"]}), 30)])
            .collect();
        let q = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let (t, l) = filtered(rs.clone(), &q(&[("name", "^n1")])).unwrap();
        assert_eq!(
            (t, l.len()),
            (11, 11),
            "n1, n10..n19; the unnamed item does not match"
        );
        assert_eq!(filtered(rs.clone(), &q(&[("label", "k")])).unwrap().0, 25);
        assert_eq!(filtered(rs.clone(), &q(&[("label", "")])).unwrap().0, 0);
        assert_eq!(filtered(rs.clone(), &q(&[("uri", "^/x$")])).unwrap().0, 1);
        assert_eq!(
            filtered(rs.clone(), &q(&[("filter", "service_id=s")]))
                .unwrap()
                .0,
            12
        );
        let (t, l) = filtered(rs.clone(), &q(&[("page", "3"), ("page_size", "10")])).unwrap();
        assert_eq!((t, l.len()), (26, 6));
        let (_, l) = filtered(rs.clone(), &q(&[("page", "-1"), ("page_size", "10")])).unwrap();
        assert_eq!(l[0].id, "1");
        let (t, l) = filtered(rs.clone(), &q(&[("page", "9"), ("page_size", "10")])).unwrap();
        assert_eq!((t, l.len()), (26, 0));
        assert!(filtered(rs, &q(&[("page", "1"), ("page_size", "2")])).is_err());
    }
}
