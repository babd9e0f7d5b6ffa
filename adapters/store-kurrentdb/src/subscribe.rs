//! `subscribe_all`: a filtered `$all` subscription that survives being dropped.
//!
//! The server does the catch-up and the live part: one catch-up subscription to `$all`
//! from the consumer's position, filtered on the server to this store's stream-name
//! prefixes. The server delivers the events *after* the position it is given, in log
//! order.
//!
//! When the subscription is dropped (a lost connection, a leader election, or an older
//! server's "consumer too slow", gRPC `ABORTED`), it is reopened after a short backoff
//! ([`ResubscribePolicy`](crate::ResubscribePolicy)) from the last position the consumer
//! received, or from a later filter checkpoint the server sent (every matching event
//! before a checkpoint has been delivered, so this skips nothing). Anything at or before
//! the last delivered position is dropped before it reaches the consumer, so it sees
//! neither a gap nor a duplicate. Errors that will not pass by themselves (refused
//! credentials, an undecodable event), or too many failed reopenings in a row, end the
//! stream with that error, and the consumer resubscribes from its checkpoint.

use crate::backend::{Deliveries, Delivery};
use crate::codec::decode;
use crate::error::{is_transient, unavailable};
use crate::position::{from_kurrent, start_after};
use crate::store::Inner;
use futures::StreamExt;
use homeroom_eventstore::{EventStream, Position};
use std::sync::Arc;

struct State {
    inner: Arc<Inner>,
    /// The last position delivered to the consumer (`None` before the first event of a
    /// subscription from the start).
    delivered: Option<Position>,
    /// Where a reopened subscription starts: `delivered`, or a later checkpoint.
    resume: Position,
    open: Option<Deliveries>,
    /// Reopenings in a row that received nothing.
    failures: u32,
    done: bool,
}

/// Every event of this store after `after`, as described in the module docs.
pub(crate) fn subscribe(inner: Arc<Inner>, after: Position) -> EventStream {
    let state = State {
        inner,
        delivered: (after != Position::START).then_some(after),
        resume: after,
        open: None,
        failures: 0,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let open = s.open.get_or_insert_with(|| {
                s.inner
                    .backend
                    .subscribe(start_after(s.resume), &s.inner.prefixes)
            });
            let failure = match open.next().await {
                Some(Ok(Delivery::Event(raw))) => {
                    let position = from_kurrent(raw.position);
                    if s.delivered.is_some_and(|d| position <= d) {
                        continue; // delivered before this subscription was reopened
                    }
                    s.failures = 0;
                    match decode(&s.inner.ns, &raw) {
                        Ok(event) => {
                            s.delivered = Some(position);
                            s.resume = s.resume.max(position);
                            return Some((Ok(event), s));
                        }
                        Err(err) => {
                            s.done = true;
                            return Some((Err(err), s));
                        }
                    }
                }
                Some(Ok(Delivery::Checkpoint(position))) => {
                    s.failures = 0;
                    s.resume = s.resume.max(from_kurrent(position));
                    continue;
                }
                Some(Ok(Delivery::Other)) => continue,
                Some(Err(err)) => err,
                // A subscription has no end: one that ends was cut off.
                None => kurrentdb::Error::ConnectionClosed,
            };
            s.open = None;
            s.failures += 1;
            if !is_transient(&failure) || s.failures > s.inner.resubscribe.attempts {
                s.done = true;
                return Some((Err(unavailable(failure)), s));
            }
            tracing::debug!(
                error = %failure,
                attempt = s.failures,
                resume = %s.resume,
                "the $all subscription was dropped; reopening"
            );
            tokio::time::sleep(s.inner.resubscribe.delay(s.failures)).await;
        }
    }))
}
