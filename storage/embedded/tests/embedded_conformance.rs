//! The shared conformance suite against the embedded backend, once per durability mode.

use std::sync::Arc;
use tern_storage::conformance::StoreUnderTest;
use tern_storage_embedded::{Durability, EmbeddedConfig, EmbeddedStore};

/// A fresh store in its own temp dir; the dir is the guard.
async fn fresh(durability: Durability) -> StoreUnderTest {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(EmbeddedConfig { durability, ..EmbeddedConfig::new(dir.path().join("db")) })
        .expect("open embedded store");
    (Arc::new(store), Box::new(dir))
}

mod process {
    tern_storage::conformance_tests!(super::fresh(tern_storage_embedded::Durability::Process));
}

mod fsync {
    tern_storage::conformance_tests!(super::fresh(tern_storage_embedded::Durability::Fsync));
}
