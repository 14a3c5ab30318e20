//! The one place an endpoint is declared. Each endpoint module's `routes()` adds its
//! handlers to an [`Endpoints`] with `utoipa-axum`'s `routes!` — so the route and the
//! OpenAPI operation both come from the handler's `#[utoipa::path]` — together with the
//! error codes the handler answers besides the common ones, and any alias paths (the
//! original system's controller paths). Everything that is routed is documented, and
//! the reverse; `served_paths` lets a test hold the router to that.
//!
//! This module must never route a path it does not document.

use std::sync::Arc;

use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use super::ApiState;

/// What the document says of one endpoint beyond its `#[utoipa::path]`.
#[derive(Debug, Clone)]
pub struct EndpointMeta {
    /// The path as routed (the seed's).
    pub path: String,
    /// Codes failing the whole call, besides the ones every `/v1` call can answer.
    pub codes: &'static [u32],
    /// Codes of single items of a batch (listed in `errorId` or per-item results).
    pub item_codes: &'static [u32],
    /// Other paths serving the same handler (the original system's names).
    pub aliases: Vec<&'static str>,
}

/// The endpoint table under construction.
pub struct Endpoints {
    router: OpenApiRouter<Arc<ApiState>>,
    meta: Vec<EndpointMeta>,
    /// The last endpoint's method router, for [`Endpoints::alias`].
    last: Option<MethodRouter<Arc<ApiState>>>,
    served: Vec<String>,
}

impl Endpoints {
    pub fn new(base: OpenApi) -> Self {
        Self { router: OpenApiRouter::with_openapi(base), meta: Vec::new(), last: None, served: Vec::new() }
    }

    /// Adds one handler (`routes!(handler)`) with its own error codes: `codes` fail the
    /// whole call, `item_codes` single items of a batch.
    pub fn add(
        mut self,
        route: UtoipaMethodRouter<Arc<ApiState>>,
        codes: &'static [u32],
        item_codes: &'static [u32],
    ) -> Self {
        let (schemas, paths, method_router) = route;
        for path in paths.paths.keys() {
            self.served.push(path.clone());
            self.meta.push(EndpointMeta { path: path.clone(), codes, item_codes, aliases: Vec::new() });
        }
        self.last = Some(method_router.clone());
        self.router = self.router.routes((schemas, paths, method_router));
        self
    }

    /// Serves the endpoint added last at `path` too (documented as an alias of it).
    pub fn alias(mut self, path: &'static str) -> Self {
        if let (Some(mr), Some(meta)) = (self.last.clone(), self.meta.last_mut()) {
            meta.aliases.push(path);
            self.served.push(path.to_string());
            self.router = self.router.route(path, mr);
        }
        self
    }

    /// The router, the document as utoipa built it, and what it does not hold.
    pub fn into_parts(self) -> (Router<Arc<ApiState>>, OpenApi, Vec<EndpointMeta>, Vec<String>) {
        let (router, doc) = self.router.split_for_parts();
        (router, doc, self.meta, self.served)
    }
}
