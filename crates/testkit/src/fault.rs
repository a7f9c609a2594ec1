//! A fault-injecting HTTP proxy: put it between a client and a real server (fake-gcs-server) and it
//! answers a share of the requests with 503 or 429, closes some connections without an answer
//! (before forwarding, or after: the server acted but the client never hears of it), and may add a
//! delay to every request. Faults are drawn from a seeded generator, so a run is repeatable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{HttpRequest, HttpResponse, HttpServer};

/// What the proxy does to the traffic.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Share of requests that get a fault (0.0 to 1.0): 40% of those a 503, 30% a 429 (with
    /// `Retry-After: 0`), 15% a connection closed before forwarding, 15% a connection closed after
    /// the server answered.
    pub rate: f64,
    pub seed: u64,
    /// Added before forwarding each request (slows a run down, e.g. to kill it midway).
    pub delay: Duration,
    /// Requests whose path contains one of these always get a 503 (an object that keeps failing).
    pub always_fail: Vec<String>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.2,
            seed: 42,
            delay: Duration::ZERO,
            always_fail: Vec::new(),
        }
    }
}

/// How many of each fault were injected.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultCounts {
    pub forwarded: u64,
    pub unavailable_503: u64,
    pub too_many_429: u64,
    pub dropped_before: u64,
    pub dropped_after: u64,
}

#[derive(Default)]
struct Counters {
    drawn: AtomicU64,
    forwarded: AtomicU64,
    unavailable: AtomicU64,
    too_many: AtomicU64,
    dropped_before: AtomicU64,
    dropped_after: AtomicU64,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    server: HttpServer,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str, config: FaultConfig) -> FaultProxy {
        let upstream = upstream.trim_end_matches('/').to_owned();
        let counters = Arc::new(Counters::default());
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(128)
            .build()
            .expect("fault proxy client");
        let c = counters.clone();
        let server = HttpServer::start(move |req| {
            let n = c.drawn.fetch_add(1, Ordering::Relaxed);
            let draw = unit(splitmix64(
                config.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            let share = if config.rate > 0.0 {
                draw / config.rate
            } else {
                1.0
            };
            if !config.delay.is_zero() {
                std::thread::sleep(config.delay);
            }
            if share < 0.40
                || config
                    .always_fail
                    .iter()
                    .any(|p| req.path.contains(p.as_str()))
            {
                c.unavailable.fetch_add(1, Ordering::Relaxed);
                return gcs_error(503, "injected: backend unavailable");
            }
            if share < 0.70 {
                c.too_many.fetch_add(1, Ordering::Relaxed);
                return gcs_error(429, "injected: rate limit exceeded").header("retry-after", "0");
            }
            if share < 0.85 {
                c.dropped_before.fetch_add(1, Ordering::Relaxed);
                return HttpResponse::dropped_connection();
            }
            let response = forward(&client, &upstream, req);
            if share < 1.0 {
                c.dropped_after.fetch_add(1, Ordering::Relaxed);
                return HttpResponse::dropped_connection();
            }
            c.forwarded.fetch_add(1, Ordering::Relaxed);
            response
        });
        FaultProxy { server, counters }
    }

    /// `http://127.0.0.1:PORT`: the value for `STORAGE_EMULATOR_HOST`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn counts(&self) -> FaultCounts {
        let c = &self.counters;
        FaultCounts {
            forwarded: c.forwarded.load(Ordering::Relaxed),
            unavailable_503: c.unavailable.load(Ordering::Relaxed),
            too_many_429: c.too_many.load(Ordering::Relaxed),
            dropped_before: c.dropped_before.load(Ordering::Relaxed),
            dropped_after: c.dropped_after.load(Ordering::Relaxed),
        }
    }
}

fn gcs_error(code: u16, message: &str) -> HttpResponse {
    HttpResponse::json(
        code,
        &serde_json::json!({
            "error": {"code": code, "message": message, "errors": [
                {"domain": "global", "reason": "backendError", "message": message}
            ]}
        }),
    )
}

const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

fn forward(client: &reqwest::blocking::Client, upstream: &str, req: &HttpRequest) -> HttpResponse {
    let mut url = format!("{upstream}{}", req.path);
    if !req.query.is_empty() {
        url.push('?');
        url.push_str(&req.query);
    }
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).expect("HTTP method");
    let mut builder = client.request(method, &url).body(req.body.to_vec());
    for (name, value) in &req.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    match builder.send() {
        Ok(response) => {
            let mut out = HttpResponse::new(response.status().as_u16());
            for (name, value) in response.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    out = out.header(name.as_str(), &String::from_utf8_lossy(value.as_bytes()));
                }
            }
            match response.bytes() {
                Ok(body) => out.body(body),
                Err(_) => HttpResponse::dropped_connection(),
            }
        }
        Err(_) => HttpResponse::dropped_connection(),
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A number in [0, 1) from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_spread_evenly() {
        let below = (0..10_000u64)
            .filter(|n| unit(splitmix64(7 ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))) < 0.2)
            .count();
        assert!((1_700..2_300).contains(&below), "{below}");
    }
}
