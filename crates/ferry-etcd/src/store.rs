//! [`EtcdStore`]: the configuration store on etcd. Admin reads go to etcd (linearizable), every
//! read-modify-write is one transaction guarded by revisions, and every etcd call is bounded by
//! `deployment.etcd.timeout`. The data plane reads the watched [`Mirror`] and never waits on
//! etcd.

use crate::crypt::Keyring;
use crate::layout::{Layout, MARKED_DIRS};
use crate::mirror::{Decoder, Kv, Mirror};
use crate::pool::Pool;
use etcd_client::{
    Certificate, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KeyValue, TlsOptions,
    Txn, TxnOp,
};
use ferry_config::cluster::{DataEncryption, EtcdConf};
use ferry_config::store::{
    Change, Guard, Record, Store, StoreError, StoreSnapshot, WriteFn, WriteOutcome, now_secs,
    referrers, stamp,
};
use ferry_config::{Kind, PluginChecker};
use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the store and its watcher share.
pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) conf: EtcdConf,
    pub(crate) dec: Decoder,
    pub(crate) mirror: RwLock<Mirror>,
    pub(crate) rev_tx: watch::Sender<u64>,
}

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    inner: Arc<Inner>,
}

/// Start-up settings beside `deployment.etcd`.
pub struct Options<'a> {
    pub encryption: &'a DataEncryption,
    /// `apisix.ssl.ssl_trusted_certificate`: the CA that signed etcd's certificate.
    pub trusted_ca: Option<&'a Path>,
    pub plugins: Arc<dyn PluginChecker>,
    /// Traditional and control-plane nodes create the directory markers; data planes never
    /// write.
    pub writes: bool,
}

pub(crate) fn kv_of(kv: &KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Some(kv.value().to_vec()),
        create_rev: kv.create_revision().max(0) as u64,
        mod_rev: kv.mod_revision().max(0) as u64,
    }
}

/// etcd's own words for a failure, without the client's wrapping.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            if m.is_empty() {
                format!("{:?}", s.code())
            } else {
                m.to_string()
            }
        }
        e => e.to_string(),
    }
}

fn options(conf: &EtcdConf, trusted_ca: Option<&Path>) -> Result<ConnectOptions, String> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(conf.timeout.min(Duration::from_secs(5)))
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let (Some(u), Some(p)) = (&conf.user, &conf.password) {
        o = o.with_user(u.clone(), p.clone());
    }
    let https = conf.hosts.iter().any(|h| h.starts_with("https://"));
    let plain = ferry_config::cluster::EtcdTls {
        cert: None,
        key: None,
        verify: true,
        sni: None,
    };
    if https {
        let t = conf.tls.as_ref().unwrap_or(&plain);
        if !t.verify {
            return Err("deployment.etcd.tls.verify: false is not supported by Ferry; give the CA that signed etcd's certificate in apisix.ssl.ssl_trusted_certificate".into());
        }
        let Some(ca) = trusted_ca else {
            return Err("deployment.etcd.tls: give the CA that signed etcd's certificate in apisix.ssl.ssl_trusted_certificate".into());
        };
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(pem));
        if let (Some(c), Some(k)) = (&t.cert, &t.key) {
            let cert = std::fs::read(c).map_err(|e| format!("{}: {e}", c.display()))?;
            let key = std::fs::read(k).map_err(|e| format!("{}: {e}", k.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(sni) = &t.sni {
            tls = tls.domain_name(sni.clone());
        }
        o = o.with_tls(tls);
    }
    Ok(o)
}

/// `x.y.z` at least 3.4.0.
fn version_ok(v: &str) -> bool {
    let mut it = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (3, 4)
}

/// Waits for one endpoint to answer, `startup_retry` attempts each, pausing 0.5 s doubling to
/// 2 s between rounds; refuses etcd older than 3.4.0. Returns the endpoint that answered.
async fn probe(conf: &EtcdConf, pool: &Pool) -> Result<usize, String> {
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=conf.startup_retry {
        for (i, host) in conf.hosts.iter().enumerate() {
            let r = tokio::time::timeout(Duration::from_secs(3), async {
                let mut c = pool.client(i).await?;
                c.status().await
            })
            .await;
            match r {
                Ok(Ok(s)) => {
                    if !version_ok(s.version()) {
                        return Err(format!(
                            "etcd cluster version {} is less than the required version 3.4.0, please upgrade your etcd cluster",
                            s.version()
                        ));
                    }
                    return Ok(i);
                }
                Ok(Err(e)) => eprintln!(
                    "Warning! Request etcd endpoint '{host}/version' error, {}, retry time={attempt}",
                    describe(&e)
                ),
                Err(_) => eprintln!(
                    "Warning! Request etcd endpoint '{host}/version' error, timeout, retry time={attempt}"
                ),
            }
        }
        if attempt < conf.startup_retry {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Err(format!(
        "all etcd nodes are unavailable ({} tried {} time(s) each; deployment.etcd.startup_retry sets how many)",
        conf.hosts.join(", "),
        conf.startup_retry
    ))
}

impl EtcdStore {
    /// Connects (waiting for etcd as `startup_retry` allows), creates the directory markers
    /// when this node writes, loads everything under the prefix and starts watching.
    pub async fn connect(conf: &EtcdConf, o: Options<'_>) -> Result<EtcdStore, String> {
        let pool = Pool::new(
            conf.hosts.clone(),
            options(conf, o.trusted_ca)?,
            conf.timeout,
        );
        let live = probe(conf, &pool).await?;
        pool.prefer(live);
        let (rev_tx, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            pool,
            conf: conf.clone(),
            dec: Decoder {
                layout: Layout::new(&conf.prefix),
                keyring: Keyring::new(o.encryption),
                plugins: o.plugins,
            },
            mirror: RwLock::new(Mirror::default()),
            rev_tx,
        });
        let store = EtcdStore { inner };
        if o.writes {
            store
                .markers()
                .await
                .map_err(|e| format!("cannot initialise the etcd prefix: {e}"))?;
        }
        let (kvs, rev) = store
            .inner
            .list_all()
            .await
            .map_err(|e| format!("failed to load the configuration: {e}"))?;
        let served = {
            let mut m = store.inner.mirror.write().map_err(|_| "mirror lock")?;
            m.relist(&store.inner.dec, &kvs, rev);
            m.reset_log();
            m.len()
        };
        store.inner.rev_tx.send_replace(rev);
        tracing::info!(
            revision = rev,
            resources = served,
            prefix = %conf.prefix,
            "configuration loaded from etcd"
        );
        tokio::spawn(crate::sync::run(store.inner.clone()));
        Ok(store)
    }

    /// One read-modify-write in a txn; retried on a lost compare within `timeout`, except
    /// when guarded (then [`StoreError::Stale`]: the caller's checks must run again).
    async fn write_with(
        &self,
        kind: Kind,
        id: &str,
        mut f: WriteFn,
        guard: Option<&Guard>,
    ) -> Result<WriteOutcome, StoreError> {
        let inner = &self.inner;
        let key = inner.dec.layout.key(kind, id);
        let deadline = Instant::now() + inner.conf.timeout;
        loop {
            let old = inner.get_kv(&key).await?;
            let old_rec = old.as_ref().and_then(|(_, r)| r.clone());
            let (mut value, refs) = f(old_rec.as_ref().map(|r| &r.value))?;
            let mut when = guard.map_or_else(Vec::new, |g| {
                g.kinds
                    .iter()
                    .map(|k| {
                        Compare::mod_revision(
                            inner.dec.layout.dir(*k),
                            CompareOp::Less,
                            g.since as i64 + 1,
                        )
                        .with_prefix()
                    })
                    .collect()
            });
            when.push(match &old {
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Some((kv, _)) => {
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_rev as i64)
                }
            });
            for (rk, rid) in refs {
                let rkey = inner.dec.layout.key(rk, &rid);
                if inner.get_kv(&rkey).await?.is_none() {
                    return Err(StoreError::MissingRef(rk, rid));
                }
                when.push(Compare::version(rkey, CompareOp::Greater, 0));
            }
            if kind.stamped() {
                stamp(&mut value, old_rec.as_ref(), now_secs());
            }
            let mut sealed = value.clone();
            inner.dec.keyring.seal(kind, &mut sealed);
            let bytes =
                serde_json::to_vec(&sealed).map_err(|e| StoreError::Backend(e.to_string()))?;
            let txn = Txn::new()
                .when(when)
                .and_then(vec![TxnOp::put(key.clone(), bytes, None)]);
            let r = inner.txn(&txn).await?;
            if r.succeeded() {
                let rev = header_rev(r.header());
                return Ok(WriteOutcome {
                    created: old.is_none(),
                    record: Record {
                        kind,
                        id: id.to_string(),
                        value,
                        create_rev: old.map_or(rev, |(kv, _)| kv.create_rev),
                        mod_rev: rev,
                    },
                });
            }
            if guard.is_some() {
                // what the caller checked may have changed: it checks again
                return Err(StoreError::Stale);
            }
            if Instant::now() > deadline {
                return Err(lost_race());
            }
        }
    }

    /// Puts each missing `init_dir` marker, so APISIX's Admin API lists empty collections.
    async fn markers(&self) -> Result<(), StoreError> {
        let l = &self.inner.dec.layout;
        for d in MARKED_DIRS {
            let k = l.marker(d);
            let t = Txn::new()
                .when(vec![Compare::create_revision(
                    k.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(k, "init_dir", None)]);
            self.inner.txn(&t).await?;
        }
        Ok(())
    }
}

impl Inner {
    /// One transaction, on the first endpoint that answers.
    pub(crate) async fn txn(&self, t: &Txn) -> Result<etcd_client::TxnResponse, StoreError> {
        self.pool
            .run(|mut c| {
                let t = t.clone();
                async move { c.txn(t).await }
            })
            .await
    }

    /// Every key under `prefix`, and the revision they were read at.
    async fn get_prefixed(&self, prefix: String) -> Result<(Vec<Kv>, u64), StoreError> {
        let r = self
            .pool
            .run(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        Ok((r.kvs().iter().map(kv_of).collect(), header_rev(r.header())))
    }

    /// Every key under the configured prefix, and the revision they were read at.
    pub(crate) async fn list_all(&self) -> Result<(Vec<Kv>, u64), StoreError> {
        self.get_prefixed(self.dec.layout.all()).await
    }

    async fn get_kv(&self, key: &str) -> Result<Option<(Kv, Option<Record>)>, StoreError> {
        let r = self
            .pool
            .run(|mut c| {
                let key = key.to_string();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(r.kvs().first().map(|kv| {
            let kv = kv_of(kv);
            let rec = self.dec.read(&kv).ok().flatten();
            (kv, rec)
        }))
    }

    async fn range(&self, kind: Kind) -> Result<(Vec<Record>, u64), StoreError> {
        let (kvs, rev) = self.get_prefixed(self.dec.layout.dir(kind)).await?;
        let mut out: Vec<Record> = kvs
            .iter()
            .filter_map(|kv| self.dec.read(kv).ok().flatten())
            .filter(|rec| rec.kind == kind)
            .collect();
        out.sort_by(|a, b| (a.create_rev, &a.id).cmp(&(b.create_rev, &b.id)));
        Ok((out, rev))
    }
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>) -> u64 {
    h.map_or(0, |h| h.revision().max(0) as u64)
}

/// The text of a reference field, numbers included (APISIX ids may be numbers).
fn ref_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn lost_race() -> StoreError {
    StoreError::Unavailable("value changed before overwritten".into())
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn prefix(&self) -> &str {
        self.inner.dec.layout.prefix()
    }

    async fn post_id(&self) -> Result<String, StoreError> {
        let key = self.inner.dec.layout.gen_id();
        let r = self
            .inner
            .pool
            .run(|mut c| {
                let key = key.clone();
                async move { c.put(key, "1", None).await }
            })
            .await?;
        Ok(format!("{:020}", header_rev(r.header())))
    }

    async fn get(&self, kind: Kind, id: &str) -> Result<Option<Record>, StoreError> {
        let key = self.inner.dec.layout.key(kind, id);
        Ok(self
            .inner
            .get_kv(&key)
            .await?
            .and_then(|(_, r)| r)
            .filter(|r| r.kind == kind))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError> {
        Ok(self.inner.range(kind).await?.0)
    }

    async fn write(&self, kind: Kind, id: &str, f: WriteFn) -> Result<WriteOutcome, StoreError> {
        self.write_with(kind, id, f, None).await
    }

    async fn guard_revision(&self) -> Result<u64, StoreError> {
        let key = self.inner.dec.layout.gen_id();
        let r = self
            .inner
            .pool
            .run(|mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_count_only())).await }
            })
            .await?;
        Ok(header_rev(r.header()))
    }

    async fn write_guarded(
        &self,
        kind: Kind,
        id: &str,
        f: WriteFn,
        guard: &Guard,
    ) -> Result<WriteOutcome, StoreError> {
        self.write_with(kind, id, f, Some(guard)).await
    }

    async fn delete(&self, kind: Kind, id: &str, force: bool) -> Result<(Record, u64), StoreError> {
        let inner = &self.inner;
        let l = &inner.dec.layout;
        let key = l.key(kind, id);
        let deadline = Instant::now() + inner.conf.timeout;
        loop {
            let (kv, rec) = inner.get_kv(&key).await?.ok_or(StoreError::NotFound)?;
            let rec = rec.filter(|r| r.kind == kind).ok_or(StoreError::NotFound)?;
            let mut when = vec![Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_rev as i64,
            )];
            for (by_kind, field) in referrers(kind).iter().filter(|_| !force) {
                let (users, rev) = inner.range(*by_kind).await?;
                if let Some(u) = users
                    .iter()
                    .find(|u| u.value.get(*field).and_then(ref_text).as_deref() == Some(id))
                {
                    return Err(StoreError::InUse(kind, *by_kind, u.id.clone()));
                }
                // Nobody may start using it between that read and the delete.
                when.push(
                    Compare::mod_revision(l.dir(*by_kind), CompareOp::Less, rev as i64 + 1)
                        .with_prefix(),
                );
            }
            let mut ops = Vec::new();
            if kind == Kind::Consumers {
                ops.push(TxnOp::delete(
                    l.credentials_of(id),
                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                ));
            }
            ops.push(TxnOp::delete(key.clone(), None));
            let r = inner.txn(&Txn::new().when(when).and_then(ops)).await?;
            if r.succeeded() {
                return Ok((rec, header_rev(r.header())));
            }
            if Instant::now() > deadline {
                return Err(lost_race());
            }
        }
    }

    async fn replace_all(
        &self,
        _items: Vec<(Kind, String, Value)>,
        _doc: Value,
    ) -> Result<u64, StoreError> {
        Err(StoreError::Rejected(
            "the standalone configuration API is not available with config_provider etcd".into(),
        ))
    }

    async fn document(&self) -> Result<Option<Value>, StoreError> {
        Ok(None)
    }

    async fn snapshot(&self) -> Result<StoreSnapshot, StoreError> {
        self.inner
            .mirror
            .read()
            .map(|m| m.snapshot())
            .map_err(|_| StoreError::Backend("mirror lock poisoned".into()))
    }

    async fn changes_since(&self, rev: u64) -> Result<Option<Vec<Change>>, StoreError> {
        self.inner
            .mirror
            .read()
            .map(|m| m.changes_since(rev))
            .map_err(|_| StoreError::Backend("mirror lock poisoned".into()))
    }

    fn watch(&self) -> watch::Receiver<u64> {
        self.inner.rev_tx.subscribe()
    }
}
