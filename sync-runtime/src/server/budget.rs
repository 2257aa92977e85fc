//! Request bytes in flight, bounded per account and for the server process. A request takes its
//! body's size (its `Content-Length`, or the body limit when it does not say) from the budget
//! before the body is read, and gives it back when the request ends, so what bodies and their
//! decoded rows hold stays bounded whatever one account, or all of them, send at once. Beyond
//! the account's budget a request is answered 429, beyond the process's 503, both with
//! `Retry-After` and before a byte of the body is read.

use crate::server::error::ApiError;
use axum::http::{HeaderMap, header};
use std::collections::HashMap;
use std::sync::Mutex;

/// Seconds a client is told to wait when the budget is spent: a push in flight takes about
/// that long to finish.
const RETRY_AFTER: u64 = 1;

/// The bytes of request bodies being read or handled, per account and in all.
pub struct RequestBudget {
    in_flight: Mutex<InFlight>,
    per_account: usize,
    total: usize,
}

#[derive(Default)]
struct InFlight {
    by_account: HashMap<String, usize>,
    total: usize,
}

/// A request's share of the budget, given back when dropped (answered, refused, or the client
/// went away).
pub struct Admitted<'b> {
    budget: &'b RequestBudget,
    account: Option<String>,
    bytes: usize,
}

impl RequestBudget {
    /// At most `per_account` bytes of one account's requests, and `total` of all requests, in
    /// flight at once. A lone request is always admitted, whatever its size within the body
    /// limit: a budget smaller than one body refuses nothing that nothing else holds up.
    pub fn new(per_account: usize, total: usize) -> RequestBudget {
        RequestBudget {
            in_flight: Mutex::new(InFlight::default()),
            per_account,
            total,
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        // Every change under the lock is one step: a panic elsewhere leaves it consistent.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes` for a request of `account` (`None`: before anyone is signed in), or
    /// refuses it: 429 beyond the account's share, 503 beyond the process's.
    pub fn admit(&self, account: Option<&str>, bytes: usize) -> Result<Admitted<'_>, ApiError> {
        let mut in_flight = self.in_flight();
        if let Some(account) = account {
            let held = in_flight.by_account.get(account).copied().unwrap_or(0);
            if held > 0 && held.saturating_add(bytes) > self.per_account {
                return Err(ApiError::AccountBusy {
                    retry_after: RETRY_AFTER,
                });
            }
        }
        if in_flight.total > 0 && in_flight.total.saturating_add(bytes) > self.total {
            return Err(ApiError::Busy {
                retry_after: RETRY_AFTER,
            });
        }
        in_flight.total += bytes;
        if let Some(account) = account {
            *in_flight.by_account.entry(account.to_owned()).or_default() += bytes;
        }
        Ok(Admitted {
            budget: self,
            account: account.map(str::to_owned),
            bytes,
        })
    }

    /// [`RequestBudget::admit`] for a request's `body` of at most `limit` bytes, counted at its
    /// declared length; a refused body is discarded (see [`discard`]).
    pub fn admit_body(
        &self,
        account: Option<&str>,
        request_headers: &HeaderMap,
        body: axum::body::Body,
        limit: usize,
        timeout: std::time::Duration,
    ) -> Result<(Admitted<'_>, axum::body::Body), ApiError> {
        // A body whose length is known without a header (one built in process) counts at it.
        let exact = axum::body::HttpBody::size_hint(&body).exact();
        let bytes = match (declared_length(request_headers), exact) {
            (None, Some(n)) => usize::try_from(n).unwrap_or(limit).min(limit),
            _ => body_bytes(request_headers, limit),
        };
        match self.admit(account, bytes) {
            Ok(admitted) => Ok((admitted, body)),
            Err(refused) => {
                discard(body, limit, timeout);
                Err(refused)
            }
        }
    }

    /// Bytes in flight now: in all, and of `account`.
    pub fn held(&self, account: &str) -> (usize, usize) {
        let in_flight = self.in_flight();
        let of_account = in_flight.by_account.get(account).copied().unwrap_or(0);
        (in_flight.total, of_account)
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.budget.in_flight();
        in_flight.total = in_flight.total.saturating_sub(self.bytes);
        if let Some(account) = &self.account
            && let Some(held) = in_flight.by_account.get_mut(account)
        {
            *held = held.saturating_sub(self.bytes);
            if *held == 0 {
                in_flight.by_account.remove(account);
            }
        }
    }
}

/// Reads and drops what arrives of a refused request's body, in the background, up to `limit`
/// bytes within `timeout`: closed with its body unread, the connection would be reset under
/// the client's feet, which then sees a network failure instead of the answer. Holds one
/// frame at a time.
pub fn discard(body: axum::body::Body, limit: usize, timeout: std::time::Duration) {
    use axum::body::HttpBody;
    tokio::spawn(tokio::time::timeout(timeout, async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                return;
            }
        }
    }));
}

/// The bytes a body will hold at most: its `Content-Length` when it states one within `limit`,
/// else `limit` (a chunked body may run up to it).
pub fn body_bytes(request_headers: &HeaderMap, limit: usize) -> usize {
    declared_length(request_headers).map_or(limit, |n| n.min(limit))
}

/// The body's `Content-Length`, when the request states one.
pub fn declared_length(request_headers: &HeaderMap) -> Option<usize> {
    request_headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_beyond_its_share_is_refused_and_others_go_on() {
        let budget = RequestBudget::new(100, 1000);
        let first = budget.admit(Some("a"), 60).unwrap();
        assert!(matches!(
            budget.admit(Some("a"), 60),
            Err(ApiError::AccountBusy { .. })
        ));
        let _other = budget.admit(Some("b"), 60).unwrap();
        assert_eq!(budget.held("a"), (120, 60));
        drop(first);
        assert_eq!(budget.held("a"), (60, 0));
        let _again = budget.admit(Some("a"), 60).unwrap();
    }

    #[test]
    fn the_process_beyond_its_budget_is_busy_and_a_lone_request_always_passes() {
        let budget = RequestBudget::new(1000, 100);
        let big = budget.admit(Some("a"), 500).unwrap();
        assert!(matches!(
            budget.admit(Some("b"), 1),
            Err(ApiError::Busy { .. })
        ));
        assert!(matches!(budget.admit(None, 1), Err(ApiError::Busy { .. })));
        drop(big);
        assert_eq!(budget.held("a"), (0, 0));
        let _small = budget.admit(None, 40).unwrap();
        let _more = budget.admit(Some("b"), 60).unwrap();
    }

    #[test]
    fn a_body_is_counted_at_its_declared_length_or_the_limit() {
        let mut h = HeaderMap::new();
        assert_eq!(body_bytes(&h, 64), 64);
        h.insert(header::CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(body_bytes(&h, 64), 10);
        h.insert(header::CONTENT_LENGTH, "1000".parse().unwrap());
        assert_eq!(body_bytes(&h, 64), 64);
    }
}
