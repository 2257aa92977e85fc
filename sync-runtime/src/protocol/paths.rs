//! The endpoints' paths. The server's `utoipa::path` attributes need literals: a test checks
//! that each of these appears in the served OpenAPI document, so the two cannot drift.

pub const HEALTH: &str = "/api/health";
pub const REGISTER: &str = "/api/auth/register";
pub const LOGIN: &str = "/api/auth/login";
pub const LOGOUT: &str = "/api/auth/logout";
pub const PUSH: &str = "/api/sync/push";
pub const PULL: &str = "/api/sync/pull";
pub const OPENAPI: &str = "/api/openapi.json";

/// Every path above, for checks that must cover them all.
pub const ALL: [&str; 7] = [HEALTH, REGISTER, LOGIN, LOGOUT, PUSH, PULL, OPENAPI];
