//! The endpoints' paths. The server's `utoipa::path` attributes need literals: a test checks
//! that each of these appears in the served OpenAPI document, so the two cannot drift.

pub const HEALTH: &str = "/api/health";
pub const REGISTER: &str = "/api/auth/register";
pub const LOGIN: &str = "/api/auth/login";
pub const LOGOUT: &str = "/api/auth/logout";
pub const PUSH: &str = "/api/sync/push";
pub const PULL: &str = "/api/sync/pull";
pub const OPENAPI: &str = "/api/openapi.json";
/// Readiness: the database answers.
pub const READY: &str = "/api/health/ready";
pub const PASSWORD: &str = "/api/auth/password";
pub const LOGOUT_ALL: &str = "/api/auth/logout-all";
/// `DELETE`: the account and everything it holds.
pub const ACCOUNT: &str = "/api/account";
pub const ACCOUNT_EXPORT: &str = "/api/account/export";
pub const SESSIONS: &str = "/api/account/sessions";
/// One session, by the id `SESSIONS` lists (a path template).
pub const SESSION: &str = "/api/account/sessions/{id}";

/// Every path above but the templated [`SESSION`], for checks that must cover them all.
pub const ALL: [&str; 13] = [
    HEALTH,
    REGISTER,
    LOGIN,
    LOGOUT,
    PUSH,
    PULL,
    OPENAPI,
    READY,
    PASSWORD,
    LOGOUT_ALL,
    ACCOUNT,
    ACCOUNT_EXPORT,
    SESSIONS,
];
