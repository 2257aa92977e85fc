//! The seam between a sync and its server: the operations the client needs, so that the sync,
//! the background service and live sync run the same code over HTTP ([`super::Remote`]) and
//! over a transport a test controls (requests lost, answers cut short, canned answers).

use super::remote::{NextPage, RemoteError};
use crate::protocol::auth::Session;
use crate::protocol::page::PulledPage;
use crate::protocol::push::PushResponse;
use crate::schema::Schema;
use serde_json::value::RawValue;
use std::future::Future;
use std::time::Duration;

/// One page asked of the server.
#[derive(Clone, Copy, Debug)]
pub struct PullRequest<'a> {
    pub token: &'a str,
    /// Leave out of an incremental pull the records this device wrote last (never sent in a
    /// full pull: its sweep must see the device's own writes).
    pub device_id: Option<&'a str>,
    pub schema_version: u32,
    /// The previous page's cursor; `None` starts a full pull.
    pub since: Option<&'a str>,
    pub limit: usize,
}

/// How the client reaches a sync server.
///
/// A transport is cheap to clone: the pull pipeline sends requests from background tasks.
pub trait Transport: Clone + Send + Sync + 'static {
    /// An answer whose head has arrived and whose body is still to be read (reading it is a
    /// step of its own, so the next page can be asked for meanwhile).
    type Body: Send + 'static;

    /// A transport to the server at `url`, as a sync opens one for the stored session.
    fn open(url: &str) -> Result<Self, RemoteError>;

    /// A transport to the server at `url` that also trusts the CA of `ca_pem` (a self-hosted
    /// server's). A transport that does not speak TLS itself ignores it.
    fn open_trusting(url: &str, ca_pem: Option<&str>) -> Result<Self, RemoteError> {
        let _ = ca_pem;
        Self::open(url)
    }

    /// The CA this transport trusts beside the public web's roots, if any.
    fn trusted_ca(&self) -> Option<&str> {
        None
    }

    /// The server's base URL, without a trailing slash.
    fn url(&self) -> &str;

    /// Signs in to an account, or registers it first.
    fn sign_in(
        &self,
        email: &str,
        password: &str,
        register: bool,
    ) -> impl Future<Output = Result<Session, RemoteError>> + Send;

    /// Ends the session on the server.
    fn sign_out(&self, token: &str) -> impl Future<Output = Result<(), RemoteError>> + Send;

    /// Pushes one batch (`changes`: the rows per table, as the protocol's `changes` object);
    /// the answer holds each row's result.
    fn push(
        &self,
        token: &str,
        device_id: &str,
        schema_version: u32,
        changes: &RawValue,
    ) -> impl Future<Output = Result<PushResponse, RemoteError>> + Send;

    /// The head of one page's answer, and what its headers say follows it (`None` when the
    /// server does not say in the head: the body does).
    fn pull_head(
        &self,
        request: PullRequest<'_>,
    ) -> impl Future<Output = Result<(Self::Body, Option<NextPage>), RemoteError>> + Send;

    /// The head of one page that the server may hold up to `wait` until the account changes (a
    /// long-poll), and how long the server agreed to hold it (`None`: it does not hold pulls).
    fn pull_waiting(
        &self,
        request: PullRequest<'_>,
        wait: Duration,
    ) -> impl Future<Output = Result<(Self::Body, Option<Duration>), RemoteError>> + Send;

    /// The bytes of an answer's body.
    fn read_body(
        &self,
        body: Self::Body,
    ) -> impl Future<Output = Result<bytes::Bytes, RemoteError>> + Send;
}

/// `kept` when it is a transport to the stored session's server (`url`, trusting `ca_pem`),
/// else a new one put in its place.
pub(crate) fn kept_or_open<'a, T: Transport>(
    kept: &'a mut Option<T>,
    url: &str,
    ca_pem: Option<&str>,
) -> Result<&'a mut T, RemoteError> {
    let same = kept
        .take()
        .filter(|t| t.url() == url.trim_end_matches('/') && t.trusted_ca() == ca_pem);
    let transport = match same {
        Some(t) => t,
        None => T::open_trusting(url, ca_pem)?,
    };
    Ok(kept.insert(transport))
}

/// Reads an answer's body and decodes it as a page of `schema`.
pub async fn read_page<T: Transport>(
    transport: &T,
    schema: &'static Schema,
    body: T::Body,
) -> Result<PulledPage, RemoteError> {
    let bytes = transport.read_body(body).await?;
    Ok(PulledPage::decode(schema, &bytes)?)
}
