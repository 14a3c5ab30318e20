//! Metric handles of one core, registered once at core start so that the frame path
//! only bumps pre-resolved counters (no label lookup or allocation per frame).
//!
//! No recorder is installed here: the binary decides where metrics go. Without one,
//! every handle is a no-op.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::conn::CloseCause;

pub struct Stats {
    pub connections: Gauge,
    /// Connections holding no buffer (counted by the sweep).
    pub parked: Gauge,
    pub frames_in: Counter,
    pub frames_out: Counter,
    pub link_reconnects: Counter,
    /// Deliveries to a connection reference whose slot was reused or closed.
    pub stale_deliveries: Counter,
    /// Group PushAcks taken off the frame path (never forwarded to logic).
    pub group_acks_dropped: Counter,
    /// Sends answered 80009 by the core: its Sends in flight to logic at their bound.
    pub sends_refused: Counter,
    /// Sends answered 80009 because an earlier Send of their connection was refused as
    /// busy and not yet sent again.
    pub sends_held: Counter,
    /// The core's Sends in flight to logic (set by the sweep).
    pub sends_in_flight: Gauge,
    /// Login: accepted → logic's answer arrived (ms resolution: the accept time is the
    /// connection's millisecond clock).
    pub login_seconds: Histogram,
    /// Login: `SessionOpen` queued for the link → logic's answer arrived (the link both
    /// ways, logic's reader and its batch admission).
    pub login_link_seconds: Histogram,
    closes: Vec<Counter>,
}

impl Stats {
    pub fn new(core: u16) -> Self {
        let core = core.to_string();
        Stats {
            connections: gauge!("tern_gateway_connections", "core" => core.clone()),
            parked: gauge!("tern_gateway_parked_connections", "core" => core.clone()),
            frames_in: counter!("tern_gateway_frames_in_total", "core" => core.clone()),
            frames_out: counter!("tern_gateway_frames_out_total", "core" => core.clone()),
            link_reconnects: counter!("tern_gateway_link_reconnects_total", "core" => core.clone()),
            stale_deliveries: counter!("tern_gateway_stale_deliveries_total", "core" => core.clone()),
            group_acks_dropped: counter!("tern_gateway_group_acks_dropped_total", "core" => core.clone()),
            sends_refused: counter!("tern_gateway_sends_refused_total", "core" => core.clone()),
            sends_held: counter!("tern_gateway_sends_held_total", "core" => core.clone()),
            sends_in_flight: gauge!("tern_gateway_sends_in_flight", "core" => core.clone()),
            login_seconds: histogram!("tern_gateway_login_seconds", "core" => core.clone()),
            login_link_seconds: histogram!("tern_gateway_login_link_seconds", "core" => core.clone()),
            closes: CloseCause::ALL
                .iter()
                .map(|c| counter!("tern_gateway_closes_total", "reason" => c.as_str(), "core" => core.clone()))
                .collect(),
        }
    }

    pub fn closed(&self, cause: CloseCause) {
        if let Some(c) = self.closes.get(cause.index()) {
            c.increment(1);
        }
    }
}
