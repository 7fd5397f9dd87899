//! Small JSON routes of the appliance itself for the web page (pcapd extensions, outside
//! Cloudflare's `/accounts/...` paths so they collide with no capture id), answered to any
//! credential the API accepts (the page's own token; `/metrics` may need another):
//!
//! - `GET /client/v4/pcapd/status`: RX counters, drops, disk headroom, running captures, now.
//!   Counters are totals since start; the page turns two samples into rates.
//! - `GET /client/v4/pcapd/colos`: the colos full captures may name here (this appliance's
//!   `[node] colos`, or every live node's in a fleet), each with the nodes serving it.
use crate::dpdk::{EthStats, Port};
use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use super::envelope::{ok, ApiError};
use super::{blocking, AppState};

pub async fn status(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.auth.accounts(&headers)?;
    // NIC counters are read through DPDK, and the disk with statvfs: off the async workers.
    let v = blocking(move || {
        let mut v = json!({
            "time_ms": chrono::Utc::now().timestamp_millis(),
            "captures_running": s.manager.running(),
        });
        if let Some(dp) = &s.dataplane {
            let rx = dp.stats.totals();
            let nic: EthStats = dp.ports.iter().map(Port::stats).sum();
            v["rx_packets"] = json!(rx.rx_packets);
            v["rx_bytes"] = json!(rx.rx_bytes);
            v["drops"] = json!(nic.imissed + nic.rx_nombuf + nic.ierrors);
            v["drops_by_kind"] =
                json!({"nic_imissed": nic.imissed, "nic_rx_nombuf": nic.rx_nombuf, "nic_ierrors": nic.ierrors});
        }
        if let Some((dir, keep)) = &s.data_dir {
            if let Ok(free) = crate::datadir::free_bytes(dir) {
                v["disk"] = json!({
                    "free_bytes": free,
                    "keep_free_bytes": keep,
                    "headroom_bytes": free.saturating_sub(*keep),
                });
            }
        }
        Ok::<Value, ApiError>(v)
    })
    .await?;
    Ok(ok(v))
}

pub async fn colos(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.auth.accounts(&headers)?;
    let mut by_colo: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match &s.fleet {
        Some(f) => {
            for n in f.live_nodes().iter() {
                for c in &n.colos {
                    by_colo.entry(c.clone()).or_default().push(n.name.clone());
                }
            }
        }
        None => {
            for c in s.manager.full_runtime().map(|f| f.ctx.colos.clone()).unwrap_or_default() {
                by_colo.entry(c).or_default();
            }
        }
    }
    Ok(ok(Value::Array(by_colo.into_iter().map(|(colo, nodes)| json!({"colo": colo, "nodes": nodes})).collect())))
}
