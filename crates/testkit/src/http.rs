//! A real HTTP/1.1 server on loopback (hyper), for the git smart-HTTP server and the API doubles.
//! It accepts chunked request bodies (libgit2 sends pushes that way), sets TCP_NODELAY (or every
//! response waits for Nagle), and records each request so tests can count API calls.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// A request with its whole body read.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    pub query: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Bytes,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// When set, the body is streamed (chunked) from this channel after `body`, until every
    /// sender is dropped: a Kubernetes watch.
    pub stream: Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>,
    /// When set, no response is sent: the connection is closed instead (a fault to inject).
    pub drop_connection: bool,
}

impl HttpResponse {
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            stream: None,
            drop_connection: false,
        }
    }

    /// No response at all: the server closes the connection (as a crashed or reset peer would).
    pub fn dropped_connection() -> Self {
        HttpResponse {
            drop_connection: true,
            ..Self::new(502)
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(value.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn streaming(mut self, stream: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Self {
        self.stream = Some(stream);
        self
    }
}

/// A response body: the fixed part, then whatever the channel sends, until it closes.
struct ResponseBody {
    first: Option<Bytes>,
    stream: Option<tokio::sync::mpsc::UnboundedReceiver<Bytes>>,
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        match self.stream.as_mut() {
            None => std::task::Poll::Ready(None),
            Some(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }
}

type Handler = dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync;

/// The server; stops when dropped. Handlers run on blocking threads, so they may block (CGI).
pub struct HttpServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    /// `METHOD /path?query -> status`, printed when a test fails.
    exchanges: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpServer {
    pub fn start(handler: impl Fn(&HttpRequest) -> HttpResponse + Send + Sync + 'static) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("test server runtime");
        // Bound here with std (listen backlog 128), so starting works from async tests too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind test server");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("test server address");
        let log = Log {
            requests: requests.clone(),
            exchanges: exchanges.clone(),
        };
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(req, handler.clone(), log.clone()));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        HttpServer {
            addr,
            requests,
            exchanges,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let exchanges = self
                .exchanges
                .lock()
                .map(|e| e.join("\n"))
                .unwrap_or_default();
            eprintln!(
                "---- test HTTP server {} ----\n{exchanges}\n---- end ----",
                self.addr
            );
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[derive(Clone)]
struct Log {
    requests: Arc<Mutex<Vec<HttpRequest>>>,
    exchanges: Arc<Mutex<Vec<String>>>,
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for ConnectionDropped {}

async fn serve(
    req: hyper::Request<hyper::body::Incoming>,
    handler: Arc<Handler>,
    log: Log,
) -> Result<hyper::Response<ResponseBody>, ConnectionDropped> {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let request = HttpRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    log.requests.lock().unwrap().push(request.clone());
    let line = format!("{} {}?{}", request.method, request.path, request.query);
    let response = tokio::task::spawn_blocking(move || handler(&request))
        .await
        .unwrap_or_else(|_| HttpResponse::new(500).body("test handler panicked"));
    log.exchanges
        .lock()
        .unwrap()
        .push(if response.drop_connection {
            format!("{line} -> connection dropped")
        } else {
            format!("{line} -> {}", response.status)
        });
    if response.drop_connection {
        return Err(ConnectionDropped);
    }
    let mut builder = hyper::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    let body = ResponseBody {
        first: Some(response.body),
        stream: response.stream,
    };
    Ok(builder.body(body).expect("valid test response"))
}
