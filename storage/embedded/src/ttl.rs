//! Drops expired dedup records when fjall compacts the `dedup` keyspace.
//!
//! Reads already ignore expired records, so this only reclaims space. It runs only
//! when a compaction touches the records; a small keyspace may keep expired records on
//! disk for a long time, which is harmless. It must never drop a record that has not
//! expired, and never fail a compaction over a record it cannot decode (such a record
//! is kept, and a read reports it as corrupt).

use super::codec::decode_dedup_value;
use fjall::compaction::filter::{CompactionFilter, CompactionFilterResult, Context, Factory, ItemAccessor, Verdict};
use std::time::{SystemTime, UNIX_EPOCH};

/// Makes one [`DedupExpiry`] filter per compaction.
pub(crate) struct DedupExpiryFactory;

impl Factory for DedupExpiryFactory {
    fn name(&self) -> &str {
        "tern-dedup-expiry"
    }

    fn make_filter(&self, _ctx: &Context) -> Box<dyn CompactionFilter> {
        // One clock reading per compaction run: cheaper than per item and exact enough
        // for a window measured in minutes.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Box::new(DedupExpiry { now_ms })
    }
}

struct DedupExpiry {
    now_ms: u64,
}

impl CompactionFilter for DedupExpiry {
    fn filter_item(&mut self, item: ItemAccessor<'_>, _ctx: &Context) -> CompactionFilterResult {
        let value = item.value()?;
        Ok(match decode_dedup_value(&value) {
            Ok((expires_ms, _)) if expires_ms <= self.now_ms => Verdict::Remove,
            _ => Verdict::Keep,
        })
    }
}
