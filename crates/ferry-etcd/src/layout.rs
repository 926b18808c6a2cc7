//! APISIX's etcd key layout: `<prefix>/<dir>/<id>`, credentials under
//! `<prefix>/consumers/<username>/credentials/<id>`, directory markers ending in `/`.

use ferry_config::Kind;

/// The directories `apisix init` marks with an `init_dir` key.
pub const MARKED_DIRS: &[&str] = &[
    "upstreams",
    "plugins",
    "ssls",
    "stream_routes",
    "plugin_metadata",
    "routes",
    "services",
    "consumers",
    "global_rules",
    "protos",
    "plugin_configs",
    "consumer_groups",
    "secrets",
];

/// Keys under one prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        Layout {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of one resource.
    pub fn key(&self, kind: Kind, id: &str) -> String {
        kind.key_in(&self.prefix, id)
    }

    /// The range holding a kind (credentials share their consumers' directory).
    pub fn dir(&self, kind: Kind) -> String {
        let d = match kind {
            Kind::Credentials => Kind::Consumers.as_str(),
            k => k.as_str(),
        };
        format!("{}/{d}/", self.prefix)
    }

    /// Every key Ferry reads.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// A consumer's credentials.
    pub fn credentials_of(&self, user: &str) -> String {
        format!("{}/consumers/{user}/credentials/", self.prefix)
    }

    pub fn gen_id(&self) -> String {
        format!("{}/gen_id", self.prefix)
    }

    pub fn marker(&self, dir: &str) -> String {
        format!("{}/{dir}/", self.prefix)
    }

    /// The resource a key holds; `None` for markers, unknown directories and odd shapes.
    pub fn parse(&self, key: &str) -> Option<(Kind, String)> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let (dir, id) = rest.split_once('/')?;
        if id.is_empty() || id.ends_with('/') {
            return None;
        }
        if dir == "consumers" {
            return match id.split('/').collect::<Vec<_>>()[..] {
                [_] => Some((Kind::Consumers, id.to_string())),
                [u, "credentials", c] if !u.is_empty() && !c.is_empty() => {
                    Some((Kind::Credentials, id.to_string()))
                }
                _ => None,
            };
        }
        let kind = Kind::from_path(dir)?;
        (!id.contains('/')).then(|| (kind, id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let l = Layout::new("/apisix");
        for (k, id) in [
            (Kind::Routes, "1"),
            (Kind::Consumers, "jack"),
            (Kind::Credentials, "jack/credentials/c1"),
            (Kind::PluginMetadata, "http-logger"),
        ] {
            assert_eq!(l.parse(&l.key(k, id)), Some((k, id.to_string())));
        }
        assert_eq!(
            l.key(Kind::Credentials, "u/credentials/c"),
            "/apisix/consumers/u/credentials/c"
        );
        assert_eq!(l.dir(Kind::Credentials), "/apisix/consumers/");
        for ignored in [
            "/apisix/routes/",
            "/apisix/gen_id",
            "/apisix/plugins",
            "/apisix/secrets/vault/1",
            "/apisix/stream_routes/1",
            "/apisix/protos/1",
            "/apisix/consumers/u/other/x",
            "/apisixx/routes/1",
            "/other/routes/1",
        ] {
            assert_eq!(l.parse(ignored), None, "{ignored}");
        }
        assert_eq!(
            Layout::new("/gw/").parse("/gw/routes/r1"),
            Some((Kind::Routes, "r1".into()))
        );
    }
}
