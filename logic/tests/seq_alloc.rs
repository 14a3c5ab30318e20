//! The seq allocator over the real embedded store: strictly increasing across restarts,
//! never handing a seq out twice even when the process dies between allocation and the
//! data write, and a committed watermark that never passes an in-flight seq.

use std::sync::Arc;

use proptest::prelude::*;
use tern_logic::seq::SeqAllocator;
use tern_storage::{AppId, Seq, Store, SyncKind, UserId};
use tern_storage_embedded::{EmbeddedConfig, EmbeddedStore};

fn open(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).expect("open store"))
}

/// Closes a store as a process exit would: waits for the allocator's background bound
/// raises (tasks holding a clone) to finish, then drops the last handle, releasing the
/// database's lock for the next open.
async fn close(store: Arc<dyn Store>) {
    for _ in 0..5_000 {
        if Arc::strong_count(&store) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("a background task still holds the store after 5 s");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

const APP: AppId = AppId(1);

fn alice() -> UserId {
    UserId::new("alice").unwrap()
}

#[test]
fn increasing_across_restarts_and_no_reuse_after_crash() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut handed_out = Vec::new();
        for round in 0..4 {
            let store = open(dir.path());
            let seqs = SeqAllocator::new(store.clone(), 10);
            for i in 0..25 {
                let a = seqs.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap();
                handed_out.push(a.first.0);
                // Half the allocations never complete: the "process" dies with them in flight.
                if (i + round) % 2 == 0 {
                    seqs.complete(&a, true);
                }
            }
            drop(seqs);
            close(store).await;
        }
        assert!(handed_out.windows(2).all(|w| w[0] < w[1]), "not strictly increasing: {handed_out:?}");
    });
}

#[test]
fn kinds_and_users_are_independent() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let seqs = SeqAllocator::new(open(dir.path()), 100);
        let bob = UserId::new("bob").unwrap();
        let a = seqs.allocate(APP, &alice(), SyncKind::Message, 3).await.unwrap();
        let b = seqs.allocate(APP, &alice(), SyncKind::Profile, 1).await.unwrap();
        let c = seqs.allocate(APP, &bob, SyncKind::Message, 1).await.unwrap();
        assert_eq!((a.first, a.last, b.first, c.first), (Seq(1), Seq(3), Seq(1), Seq(1)));
        assert_eq!(a.seqs().count(), 3);
    });
}

#[test]
fn watermark_stops_below_the_lowest_in_flight_seq() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let seqs = SeqAllocator::new(open(dir.path()), 100);
        let a = seqs.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap();
        let b = seqs.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap();
        let committed = || seqs.committed_now(APP, &alice(), SyncKind::Message);
        assert_eq!(committed(), Seq(0));
        seqs.complete(&b, true);
        assert_eq!(committed(), Seq(0), "b is durable but a is still in flight");
        seqs.complete(&a, false);
        assert_eq!(committed(), Seq(2), "a failed: skipped, the watermark passes it");
        assert_eq!(seqs.committed(APP, &alice(), SyncKind::Message).await.unwrap(), Seq(2));
    });
}

#[derive(Debug, Clone)]
enum Op {
    Allocate { n: u64, complete: bool },
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u64..5, any::<bool>()).prop_map(|(n, complete)| Op::Allocate { n, complete }),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any interleaving of allocations, abandoned allocations and restarts hands out
    /// strictly increasing seqs, and the watermark never exceeds the last seq handed out
    /// nor passes one still in flight.
    #[test]
    fn random_schedules_never_repeat_a_seq(ops in proptest::collection::vec(op(), 1..60), step in 1u64..20) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            let mut seqs = SeqAllocator::new(store.clone(), step);
            let mut last = 0u64;
            let mut in_flight: Vec<u64> = Vec::new();
            for op in ops {
                match op {
                    Op::Allocate { n, complete } => {
                        let a = seqs.allocate(APP, &alice(), SyncKind::Message, n).await.unwrap();
                        assert!(a.first.0 > last, "seq {} handed out after {}", a.first.0, last);
                        assert_eq!(a.last.0 - a.first.0 + 1, n);
                        last = a.last.0;
                        if complete {
                            seqs.complete(&a, true);
                        } else {
                            in_flight.push(a.first.0);
                        }
                        let w = seqs.committed_now(APP, &alice(), SyncKind::Message).0;
                        assert!(w <= last);
                        if let Some(lowest) = in_flight.iter().min() {
                            assert!(w < *lowest, "watermark {w} passed in-flight {lowest}");
                        }
                    }
                    Op::Restart => {
                        drop(seqs);
                        close(store).await;
                        store = open(dir.path());
                        seqs = SeqAllocator::new(store.clone(), step);
                        in_flight.clear();
                    }
                }
            }
        });
    }
}

#[test]
fn only_the_slot_owner_allocates() {
    use tern_logic::slots::{slot_of, Slot, SlotOwnership, SLOTS};
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mine = slot_of(APP, &alice());
        let other = SlotOwnership::only([Slot((mine.0 + 1) % SLOTS)]);
        let seqs = SeqAllocator::with_ownership(open(dir.path()), 10, other);
        let err = seqs.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap_err();
        assert!(err.to_string().contains("does not own slot"), "{err}");
        let owner =
            SeqAllocator::with_ownership(open(tempfile::tempdir().unwrap().path()), 10, SlotOwnership::only([mine]));
        assert_eq!(owner.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap().first, Seq(1));
    });
}

/// Logins install bounds read in their own batch and raise all their bounds in one
/// background write; allocation then continues above the persisted bound.
#[test]
fn installed_bounds_and_batched_prefetch() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let bob = UserId::new("bob").unwrap();
        {
            let seqs = SeqAllocator::new(store.clone(), 10);
            seqs.allocate(APP, &alice(), SyncKind::Message, 5).await.unwrap();
        }
        let seqs = SeqAllocator::new(store.clone(), 10);
        assert!(!seqs.is_loaded(APP, &alice()));
        let bounds = store.seq_bounds(APP, &tern_storage::Owner::User(alice())).await.unwrap();
        assert_eq!(bounds, vec![(SyncKind::Message, Seq(15))]);
        let mut pins = seqs.pins();
        pins.install(APP, &alice(), &bounds);
        pins.install(APP, &bob, &[]);
        assert!(seqs.is_loaded(APP, &alice()) && seqs.is_loaded(APP, &bob));
        assert_eq!(seqs.committed_now(APP, &alice(), SyncKind::Message), Seq(15));
        seqs.prefetch_loaded(&[(APP, &alice()), (APP, &bob)], SyncKind::Message);
        // Both raises land (one write); poll the store for them.
        let mut raised = false;
        for _ in 0..200 {
            let a = store.seq_bounds(APP, &tern_storage::Owner::User(alice())).await.unwrap();
            let b = store.seq_bounds(APP, &tern_storage::Owner::User(bob.clone())).await.unwrap();
            if a == vec![(SyncKind::Message, Seq(25))] && b == vec![(SyncKind::Message, Seq(10))] {
                raised = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(raised, "both bounds raised by one step");
        // A second install does not replace the state in memory.
        pins.install(APP, &alice(), &[]);
        drop(pins);
        let a = seqs.allocate(APP, &alice(), SyncKind::Message, 1).await.unwrap();
        assert_eq!(a.first, Seq(16), "allocation resumes above the persisted bound");
    });
}
