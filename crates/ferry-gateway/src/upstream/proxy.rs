//! One proxied request: pick a node, send, retry the next node on connect errors and
//! timeouts (never on an HTTP status), and stream the answer back with the read timeout
//! applied between body chunks. Errors are JSON `{"error_msg": ...}` (APISIX: nginx's HTML).

use super::{Target, UpstreamRt};
use bytes::Bytes;
use ferry_config::upstream::PassHost;
use ferry_core::body::{BoxError, GwBody, Response};
use ferry_core::ctx::Ctx;
use ferry_core::error::GatewayError;
use ferry_core::transport::UpBody;
use ferry_core::transport::UpError;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;

/// Headers that describe one connection, never forwarded either way.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Drops hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(&named) {
        h.remove(n);
    }
}

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    GatewayError::upstream(status, msg).into_response()
}

/// The client's `Host` header as sent (with its port).
fn client_host(ctx: &Ctx) -> String {
    ctx.headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| ctx.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

/// Proxies the request to the route's upstream.
pub async fn forward(target: &Target, ctx: &mut Ctx) -> Response {
    let (up, timeouts, fixed) = match target {
        Target::Fail(status, msg) => {
            return GatewayError::gateway(*status, msg.clone()).into_response();
        }
        Target::Upstream {
            up,
            timeouts,
            fixed,
        } => (up, timeouts, fixed),
    };
    if up.balancer.is_empty() {
        return GatewayError::gateway(StatusCode::SERVICE_UNAVAILABLE, "no valid upstream node")
            .into_response();
    }
    // Buffered (bounded by client_max_body_size) so a retry can send it again.
    let body = match ctx.read_body().await {
        Ok(b) => b.clone(),
        Err(e) => return e.into_response(),
    };
    let key = up.key.as_ref().map(|k| k.key(ctx));
    let conf = &up.conf;
    let tries = 1 + conf
        .retries
        .map_or(up.balancer.nodes.len().saturating_sub(1), |r| r as usize);
    let deadline = conf.retry_timeout.map(|d| Instant::now() + d);
    let host_in = client_host(ctx);
    let scheme = if conf.https { "https" } else { "http" };
    let path = ctx
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut tried = Vec::new();
    let mut last: Option<(String, UpError)> = None;
    while tried.len() < tries {
        let Some(i) = up.balancer.pick(&tried, key.as_deref()) else {
            break;
        };
        tried.push(i);
        let node = &up.balancer.nodes[i];
        let authority = &up.authorities[i];
        let host = match &conf.pass_host {
            PassHost::Pass => host_in.clone(),
            PassHost::Node => {
                let default = if conf.https { 443 } else { 80 };
                if node.port == default {
                    node.host.clone()
                } else {
                    authority.to_string()
                }
            }
            PassHost::Rewrite(h) => h.clone(),
        };
        let client = match fixed {
            Some(c) => c.clone(),
            None => match up.client(timeouts.connect, Some(ferry_core::ctx::strip_port(&host))) {
                Ok(c) => c,
                Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
            },
        };
        let req = match build_request(ctx, scheme, authority, &path, &host, body.clone()) {
            Ok(r) => r,
            Err(e) => return fail(StatusCode::BAD_GATEWAY, e),
        };
        let started = Instant::now();
        up.balancer.picker.active[i].fetch_add(1, Ordering::Relaxed);
        let guard = Active(up.clone(), i);
        match client.send_within(req, timeouts.read).await {
            Ok(resp) => {
                let took = started.elapsed().as_secs_f64();
                ctx.upstream.addr = Some(authority.to_string());
                ctx.upstream.status = Some(resp.status().as_u16());
                ctx.upstream.scheme = Some(scheme);
                ctx.upstream.host = Some(host);
                ctx.upstream.uri = Some(path.as_str().to_string());
                ctx.upstream.header_time = Some(took);
                return respond(resp, timeouts.read, guard);
            }
            Err(e) => {
                drop(guard);
                tracing::warn!(
                    route = ctx.route.as_ref().map(|r| r.id.as_str()),
                    node = %authority,
                    "upstream try {} of {tries} failed: {e}",
                    tried.len()
                );
                last = Some((authority.to_string(), e));
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
        }
    }
    match last {
        Some((node, UpError::Timeout)) => fail(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the upstream node {node} timed out (tried {} node(s))",
                tried.len()
            ),
        ),
        Some((node, e)) => fail(
            StatusCode::BAD_GATEWAY,
            format!(
                "the upstream node {node} failed: {e} (tried {} node(s))",
                tried.len()
            ),
        ),
        None => GatewayError::gateway(StatusCode::SERVICE_UNAVAILABLE, "no valid upstream node")
            .into_response(),
    }
}

fn build_request(
    ctx: &Ctx,
    scheme: &'static str,
    authority: &Authority,
    path: &PathAndQuery,
    host: &str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, String> {
    let uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path.clone())
        .build()
        .map_err(|e| format!("cannot build the upstream URI: {e}"))?;
    let mut req = http::Request::builder()
        .method(ctx.method.clone())
        .uri(uri)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the upstream request: {e}"))?;
    let h = req.headers_mut();
    *h = ctx.headers.clone();
    strip_hop_by_hop(h);
    h.remove(header::CONTENT_LENGTH);
    let val = |s: &str| HeaderValue::from_str(s).map_err(|e| format!("header value {s:?}: {e}"));
    h.insert(header::HOST, val(host)?);
    let ip = ctx.remote_ip.as_ref();
    h.insert("x-real-ip", val(ip)?);
    let xff = match ctx
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    h.insert("x-forwarded-for", val(&xff)?);
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    h.insert("x-forwarded-host", val(&ctx.host())?);
    h.insert("x-forwarded-port", HeaderValue::from(ctx.local.port()));
    Ok(req)
}

/// Counts a request in flight on a node (least_conn) until the response body ends.
struct Active(Arc<UpstreamRt>, usize);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.balancer.picker.active[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

fn respond(resp: http::Response<UpBody>, read: Duration, guard: Active) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body: GwBody = BodyExt::boxed_unsync(ReadTimeout {
        inner: body,
        read,
        sleep: None,
        _active: guard,
    });
    http::Response::from_parts(parts, body)
}

/// The upstream body with nginx's `proxy_read_timeout` between chunks. The timer is armed only
/// when the body has to wait (a small answer that is already here never touches the timer
/// wheel) and re-armed after each chunk.
struct ReadTimeout {
    inner: UpBody,
    read: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    _active: Active,
}

impl Body for ReadTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                let read = self.read;
                if let Some(s) = self.sleep.as_mut() {
                    s.as_mut().reset(tokio::time::Instant::now() + read);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let read = self.read;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(read)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err("upstream read timed out".into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
