//! APISIX's `http-logger` (priority 410) and `file-logger` (priority 399): each request's log
//! entry (see `log::entry`) sent in batches to an HTTP receiver, or appended as a JSON line to
//! a file. Processors and files are shared by instances with equal settings and released with
//! the last instance that uses them.

use crate::log::batch::{self, BatchConf, Batcher, SharedBatchers, Sink};
use crate::log::entry::{self, Entry, MAX_CAPTURED_BODY};
use crate::transport::{ClientKey, Transport, UpError, Upstream};
use bytes::Bytes;
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::line_file::LineFile;
use ferry_core::plugin::{Plugin, PluginFactory, parse_conf};
use ferry_core::shared::WeakCache;
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

fn no() -> bool {
    false
}

/// Keeps the response body (capped) for the log entry, when a logger asked for it.
pub(crate) fn capture(ctx: &mut Ctx, chunk: &Bytes) {
    if let Some(r) = ctx.response.as_mut() {
        let body = r.body.get_or_insert_with(Vec::new);
        let room = MAX_CAPTURED_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

// ---- http-logger ----------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct HttpConf {
    uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_header: Option<String>,
    #[serde(default = "d_timeout")]
    timeout: u64,
    #[serde(default = "no")]
    include_req_body: bool,
    #[serde(default = "no")]
    include_resp_body: bool,
    #[serde(default = "d_concat")]
    concat_method: String,
    #[serde(default = "no")]
    ssl_verify: bool,
    #[serde(default = "d_http_name")]
    name: String,
    #[serde(default = "batch::d_batch")]
    batch_max_size: u64,
    #[serde(default = "batch::d_inactive")]
    inactive_timeout: u64,
    #[serde(default = "batch::d_buffer")]
    buffer_duration: u64,
    #[serde(default)]
    max_retry_count: u64,
    #[serde(default = "batch::d_retry_delay")]
    retry_delay: u64,
}

fn d_timeout() -> u64 {
    3
}
fn d_concat() -> String {
    "json".into()
}
fn d_http_name() -> String {
    "http logger".into()
}

impl HttpConf {
    fn batch(&self) -> BatchConf {
        BatchConf {
            name: self.name.clone(),
            batch_max_size: self.batch_max_size,
            inactive_timeout: self.inactive_timeout,
            buffer_duration: self.buffer_duration,
            max_retry_count: self.max_retry_count,
            retry_delay: self.retry_delay,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let u = url::Url::parse(&self.uri)
            .map_err(|e| format!("property \"uri\" validation failed: {e}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err("property \"uri\" validation failed: expected an http or https URL".into());
        }
        if !matches!(self.concat_method.as_str(), "json" | "new_line") {
            return Err("property \"concat_method\" validation failed: matches none of the enum values (json, new_line)".into());
        }
        if self.timeout < 1 {
            return Err("property \"timeout\" validation failed: expected 1 or more".into());
        }
        self.batch().validate()
    }
}

struct HttpSink {
    client: Arc<Upstream>,
    uri: http::Uri,
    conf: HttpConf,
}

impl Sink for HttpSink {
    fn send<'a>(
        &'a self,
        batch: &'a [Entry],
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let (body, ct) = if self.conf.concat_method == "new_line" {
                let mut lines = Vec::new();
                for (i, e) in batch.iter().enumerate() {
                    if i > 0 {
                        lines.push(b'\n');
                    }
                    e.write_json(&mut lines);
                }
                (lines, "text/plain")
            } else if self.conf.batch_max_size == 1 && batch.len() == 1 {
                // As APISIX: a single object only when batches hold one entry by design.
                (batch[0].as_bytes().to_vec(), "application/json")
            } else {
                (entry::json_array(batch), "application/json")
            };
            let mut req = http::Request::new(Full::new(Bytes::from(body)));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = self.uri.clone();
            let h = req.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            if let Some(a) = &self.conf.auth_header {
                let v = HeaderValue::from_str(a)
                    .map_err(|e| format!("http-logger: auth_header: {e}"))?;
                h.insert(http::header::AUTHORIZATION, v);
            }
            let exchange = async {
                let resp = self.client.send(req).await?;
                let status = resp.status();
                // Read the answer (up to 1 MiB) so the connection can be reused.
                let _ = http_body_util::Limited::new(resp.into_body(), 1 << 20)
                    .collect()
                    .await;
                Ok::<_, UpError>(status)
            };
            let resp = match tokio::time::timeout(Duration::from_secs(self.conf.timeout), exchange)
                .await
            {
                Ok(Ok(status)) => HttpStatus(status),
                Ok(Err(e)) => return Err(format!("http-logger: {e}")),
                Err(_) => return Err("http-logger: timed out".into()),
            };
            if resp.0.is_success() {
                Ok(())
            } else {
                Err(format!(
                    "http-logger: {} answered {}",
                    self.conf.uri, resp.0
                ))
            }
        })
    }
}

/// Builds `http-logger` instances.
pub struct HttpFactory {
    shared: SharedBatchers,
    transport: Arc<Transport>,
}

impl HttpFactory {
    pub fn new(transport: Arc<Transport>) -> HttpFactory {
        HttpFactory {
            shared: SharedBatchers::default(),
            transport,
        }
    }
}

/// The receiver's answer.
struct HttpStatus(http::StatusCode);

impl PluginFactory for HttpFactory {
    fn name(&self) -> &'static str {
        "http-logger"
    }

    fn priority(&self) -> i32 {
        410
    }

    fn schema(&self) -> Value {
        batch::with_schema_props(
            json!({"type": "object", "required": ["uri"], "properties": {
            "uri": {"type": "string"}, "auth_header": {"type": "string"}, "timeout": {"type": "integer", "minimum": 1, "default": 3},
            "include_req_body": {"type": "boolean", "default": false}, "include_resp_body": {"type": "boolean", "default": false},
            "concat_method": {"type": "string", "enum": ["json", "new_line"], "default": "json"},
            "ssl_verify": {"type": "boolean", "default": false}, "name": {"type": "string", "default": "http logger"}}}),
        )
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: HttpConf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: HttpConf = parse_conf(conf)?;
        c.validate()?;
        let key = serde_json::to_string(&c).map_err(|e| e.to_string())?;
        let batcher = self.shared.get_or_start(key, &c.batch(), || {
            let client = self.transport.client(ClientKey {
                ssl_verify: c.ssl_verify,
                keepalive: true,
                keepalive_timeout_ms: 60_000,
                keepalive_pool: 4,
                timeout_ms: c.timeout * 1000,
                connect_timeout_ms: None,
                sni: None,
            })?;
            let uri = http::Uri::try_from(c.uri.as_str())
                .map_err(|e| format!("property \"uri\" validation failed: {e}"))?;
            Ok(Arc::new(HttpSink {
                client,
                uri,
                conf: c.clone(),
            }) as Arc<dyn Sink>)
        })?;
        Ok(Arc::new(Logger {
            output: batcher,
            req_body: c.include_req_body,
            resp_body: c.include_resp_body,
        }))
    }
}

/// Where a logger's entries go.
pub(crate) trait Deliver: Send + Sync + 'static {
    fn deliver(&self, ctx: &Ctx, req_body: bool, resp_body: bool);
}

/// The logger plugins: keep what the entry needs, then hand the request to the output.
pub(crate) struct Logger<D: Deliver> {
    pub output: D,
    pub req_body: bool,
    pub resp_body: bool,
}

impl<D: Deliver> Plugin for Logger<D> {
    fn wants_response_record(&self) -> bool {
        true
    }

    fn has_body_filter(&self) -> bool {
        self.resp_body
    }

    fn body_filter(&self, ctx: &mut Ctx, chunk: &mut Bytes, _end: bool) {
        capture(ctx, chunk);
    }

    fn log(&self, ctx: &Ctx) {
        self.output.deliver(ctx, self.req_body, self.resp_body);
    }
}

impl Deliver for Arc<Batcher> {
    fn deliver(&self, ctx: &Ctx, req_body: bool, resp_body: bool) {
        self.push(entry::build(ctx, req_body, resp_body));
    }
}

impl Deliver for Arc<LineFile> {
    fn deliver(&self, ctx: &Ctx, req_body: bool, resp_body: bool) {
        let mut line = match entry::build(ctx, req_body, resp_body) {
            Entry::Json(s) | Entry::Text(s) => s,
        };
        line.push('\n');
        self.submit(line);
    }
}

// ---- file-logger ----------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct FileConf {
    path: PathBuf,
    #[serde(default = "no")]
    include_req_body: bool,
    #[serde(default = "no")]
    include_resp_body: bool,
}

/// Builds `file-logger` instances; one writer per file while some route uses it.
#[derive(Default)]
pub struct FileFactory {
    files: WeakCache<PathBuf, LineFile>,
}

impl PluginFactory for FileFactory {
    fn name(&self) -> &'static str {
        "file-logger"
    }

    fn priority(&self) -> i32 {
        399
    }

    fn schema(&self) -> Value {
        json!({"type": "object", "required": ["path"], "properties": {"path": {"type": "string"},
            "include_req_body": {"type": "boolean", "default": false}, "include_resp_body": {"type": "boolean", "default": false}}})
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: FileConf = parse_conf(conf)?;
        if c.path.as_os_str().is_empty() {
            return Err("property \"path\" validation failed: string too short".into());
        }
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, _route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: FileConf = parse_conf(conf)?;
        let file = self.files.get_or_try_insert(c.path.clone(), || {
            LineFile::open_lenient(&c.path, "file-logger")
        })?;
        Ok(Arc::new(Logger {
            output: file,
            req_body: c.include_req_body,
            resp_body: c.include_resp_body,
        }))
    }
}
