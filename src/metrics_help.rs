//! The `# HELP` text of every metric Tern records, registered once with the recorder so
//! `/metrics` explains itself. A metric recorded without a line here is still exported,
//! without help: `tests/e2e_foundation.rs` checks that none is.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers every description with the installed recorder.
pub fn describe() {
    // logic: HTTP API
    describe_counter!("tern_http_requests_total", "HTTP API requests answered, by route template and API code.");
    describe_histogram!("tern_http_request_seconds", Unit::Seconds, "HTTP API request latency, by route template.");
    describe_gauge!("tern_http_connections", "Open HTTP API connections.");
    describe_counter!(
        "tern_http_connections_refused_total",
        "HTTP API connections closed at once because http.max_connections were open."
    );
    // logic: sessions and links
    describe_gauge!("tern_sessions_online", "Client sessions online on this logic node.");
    describe_gauge!("tern_links_up", "Gateway links connected to this logic node.");
    describe_counter!("tern_logins_total", "Logins admitted or refused, by result.");
    describe_histogram!(
        "tern_login_batch_size",
        "Logins admitted together from one link read (one store trip each batch)."
    );
    describe_histogram!(
        "tern_login_batch_seconds",
        Unit::Seconds,
        "Time to admit one login batch: its store trip, the decisions and the answers queued."
    );
    describe_counter!("tern_logins_refused_total", "Logins refused, by code.");
    describe_counter!("tern_kicks_total", "Sessions kicked, by reason.");
    describe_counter!(
        "tern_link_frames_dropped_total",
        "Frames for a gateway link dropped because its queue was full or it was gone (devices resync)."
    );
    describe_counter!("tern_link_bytes_out_total", "Bytes queued to gateway links.");
    // logic: messages
    describe_counter!("tern_messages_accepted_total", "1:1 messages accepted (durable in both timelines).");
    describe_counter!("tern_messages_pushed_total", "Message pushes sent to devices.");
    describe_counter!("tern_messages_deduplicated_total", "Resends answered with the original ack.");
    describe_counter!("tern_messages_recalled_total", "Messages recalled.");
    describe_counter!("tern_sends_refused_busy_total", "Sends refused with 80009 because a queue was full.");
    describe_counter!(
        "tern_sends_refused_link_backlog_total",
        "Sends refused with 80009 because the link to their gateway core was backed up."
    );
    describe_counter!(
        "tern_sends_held_total",
        "Sends refused with 80009 by logic because an earlier Send of the same connection was refused as busy and not sent again yet (one sender's order)."
    );
    describe_histogram!("tern_send_turn_size", "Sends handed to the store in one link turn.");
    describe_histogram!(
        "tern_send_turn_seconds",
        "Time from handing a link turn's sends to the store until they are durable."
    );
    describe_gauge!(
        "tern_conversations_held",
        "Conversations of all users' lists held in memory (conversations.max_held bounds it)."
    );
    describe_counter!(
        "tern_conversation_flags_rebuilt_total",
        "Users whose conversation-flags entry (mutes, clear points) was rebuilt from their records at login."
    );
    describe_histogram!(
        "tern_send_logic_seconds",
        "Logic's share of a TCP send's latency: from the link reader taking the Send to its SendAck queued on the link."
    );
    describe_gauge!(
        "tern_send_admission_limit",
        "Current node-wide limit of sends waiting for the store (adaptive; messages.send_latency_target_ms)."
    );
    describe_gauge!(
        "tern_gateway_parked_connections",
        "Gateway connections parked (no task, no buffer: only their table entry), counted by the timer sweep."
    );
    describe_counter!("tern_seq_bound_writes_total", "Durable seq-bound raises (one per seq_step seqs).");
    describe_gauge!(
        "tern_owner_state_bytes",
        "Bytes of per-user state loaded on touch, by state (seq, friend_view); bounded by logic.owner_state_max_bytes."
    );
    describe_gauge!("tern_owner_states", "Per-user states in memory, by state (seq, friend_view).");
    describe_counter!("tern_owner_evictions_total", "Idle per-user states evicted to stay within the bound, by state.");
    describe_counter!("tern_slot_drops_total", "Slots given up by this node (their state dropped).");
    describe_counter!(
        "tern_device_acks_dropped_total",
        "Coalesced device acks not written because their user's slot was given up (the devices pull again)."
    );
    describe_counter!("tern_seqs_abandoned_total", "Seqs allocated for writes that failed (skipped, never reused).");
    describe_gauge!("tern_sends_in_flight", "Sends handed to the store and not yet durable (all links of this node).");
    describe_counter!("tern_push_acks_total", "PushAck frames received from devices.");
    describe_counter!("tern_send_refusals_total", "TCP sends answered with a refusal, by SendAck code.");
    describe_histogram!(
        "tern_push_delay_seconds",
        Unit::Seconds,
        "Time from a message's acceptance to its push to online devices (oldest message of each Push)."
    );
    // logic: callbacks to business servers
    describe_counter!(
        "tern_callback_requests_total",
        "Callback requests to business servers, by app, event and result (ok, timeout, error, status, \
         bad_answer, overloaded)."
    );
    describe_counter!(
        "tern_callback_before_send_total",
        "Before-send decisions, by app and decision (allow, rewrite, reject, fail_open, fail_closed)."
    );
    describe_histogram!("tern_callback_seconds", Unit::Seconds, "Callback request latency, by event.");
    describe_counter!("tern_callback_retries_total", "After-event deliveries retried, by app and event.");
    describe_counter!(
        "tern_callback_dropped_total",
        "After-events dropped, by app and reason (queue_full, retries_exhausted)."
    );
    describe_gauge!("tern_callback_queue_depth", "After-events queued for delivery, by app.");
    describe_counter!("tern_group_messages_accepted_total", "Group messages accepted (durable in the group timeline).");
    describe_counter!("tern_group_messages_pushed_total", "Group message pushes sent to member devices.");
    describe_counter!(
        "tern_group_sends_deferred_total",
        "TCP group sends prepared off the link reader (their group was not in memory, or an earlier one of the link still waited)."
    );
    describe_counter!("tern_group_changes_total", "Group changes written (profile, members, roles, mutes, owner).");
    // logic: relations
    describe_counter!("tern_friend_views_loaded_total", "Relation views folded from the logs.");
    describe_counter!("tern_friend_log_entries_total", "Relation log entries written.");
    describe_counter!(
        "tern_friend_profile_share_failures_total",
        "New friendships whose friend's profile could not be put into the lister's profile sync (the relation stands)."
    );
    // storage
    describe_histogram!(
        "tern_store_group_commit_seconds",
        Unit::Seconds,
        "Time of one embedded-store group commit (every waiter of the group waited it)."
    );
    describe_histogram!("tern_store_group_ops", "Write operations in one embedded-store group commit.");
    describe_counter!(
        "tern_store_slow_commits_total",
        "Embedded-store group commits that took 100 ms or more (every write waited; logged at warn, rate-limited)."
    );
    describe_counter!("tern_store_write_retries_total", "Store writes retried after a transient failure.");
    // gateway
    describe_gauge!("tern_gateway_connections", "Client connections open, by gateway core.");
    describe_counter!("tern_gateway_frames_in_total", "Client frames received, by gateway core.");
    describe_counter!("tern_gateway_frames_out_total", "Frames written to clients, by gateway core.");
    describe_counter!("tern_gateway_link_reconnects_total", "Reconnects of a core's link to logic.");
    describe_counter!(
        "tern_gateway_group_acks_dropped_total",
        "Group PushAcks dropped at the gateway (the server keeps no per-device point in a group timeline)."
    );
    describe_counter!("tern_gateway_stale_deliveries_total", "Deliveries for connections already gone.");
    describe_counter!(
        "tern_gateway_sends_refused_total",
        "Sends a gateway core answered itself with 80009: its sends in flight to logic were at [gateway] max_sends_in_flight_per_core."
    );
    describe_counter!(
        "tern_gateway_sends_held_total",
        "Sends a gateway core answered 80009 because an earlier Send of the same connection was refused as busy and not sent again yet (one sender's order)."
    );
    describe_gauge!(
        "tern_gateway_sends_in_flight",
        "Sends a gateway core forwarded to logic and logic has not answered yet (sampled by the core's sweep)."
    );
    describe_counter!("tern_gateway_closes_total", "Client connections closed, by reason and core.");
    describe_histogram!(
        "tern_gateway_login_seconds",
        Unit::Seconds,
        "Logins: connection accepted to logic's answer, by gateway core (millisecond resolution)."
    );
    describe_histogram!(
        "tern_gateway_login_link_seconds",
        Unit::Seconds,
        "Logins: SessionOpen queued for the link to logic's answer, by gateway core."
    );
}
