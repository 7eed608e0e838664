//! Forwarding a core NATS subscription into a [`Subscription`]'s channel,
//! and draining it without losing what the server already routed to it.
//!
//! ## Why not `Subscriber::drain`
//!
//! async-nats (0.51, 0.52) forgets a drained subscription as soon as its
//! `UNSUB` is written, not when the server has read it. Whatever the
//! server sent before reading it (a queue group's next messages for this
//! member) then arrives for an unknown subscription and is dropped: lost
//! records when a spine or detector is scaled down under load.
//!
//! ## The counted fence
//!
//! `UNSUB <sid> <max>` makes the server stop after `max` deliveries, and
//! the client (which counts the same deliveries) forgets the subscription
//! at the same message: nothing is lost **if the server has not already
//! sent more than `max`** when it reads the `UNSUB`. The count the client
//! has reached is not visible, so the fence is placed after a **barrier**:
//! a message published to a private inbox this connection subscribes to.
//! The server handles a connection's operations in order, so when the
//! barrier comes back every message it sent this subscription before it
//! has arrived; those are taken out and counted, and the fence goes a
//! margin beyond (see [`margin`]). The margin has to cover what the server
//! routes to this member between reading the barrier and reading the
//! `UNSUB`: a local round trip, plus however long this task waits for a
//! core on a loaded machine. It is sized in time, from the member's
//! arrival rate: the first fence allows 150 ms of traffic and a few
//! messages more.
//!
//! The drain ends:
//! * when the fence is reached (the normal end under traffic; lossless);
//! * after [`quiet`] (three mean gaps of its traffic, 100–250 ms) with
//!   nothing arriving, confirmed by one more barrier: then a plain `UNSUB`.
//!   A message the server routes here in the instant between that barrier
//!   and the `UNSUB` would be lost; it needs a publish at exactly that
//!   moment after a tenth of a second or more of silence
//!   (async-nats cannot keep the subscription until the server's `PONG`,
//!   which is how the Go client closes that window);
//! * if the fence is not reached within [`STEP`], a closer one when the
//!   traffic just seen puts it closer (a fence never moves away); after
//!   [`STEPS`] steps the subscription ends with a plain `UNSUB` and a
//!   warning, as components have a bounded time to drain (a detector has
//!   about half a second left when it drains).
//!
//! A fence is lost if this task is kept from running for longer than its
//! margin's time between the barrier and the `UNSUB`; the test
//! `a_draining_queue_member_hands_over_without_losing_a_message` runs it
//! with the machine's cores busy.

use ben_bus::Message;
use futures_util::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a fence is given before a closer one.
pub const STEP: Duration = Duration::from_millis(100);
/// Fences set before the subscription is ended regardless.
pub const STEPS: u32 = 4;
/// Arrival rates are measured over windows of this length.
const RATE_WINDOW: Duration = Duration::from_millis(250);
/// How long a round trip may take before the connection is judged gone.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(2);

/// How many deliveries past the counted ones the `step`-th fence allows,
/// for a member receiving `per_s` messages a second, of which
/// `in_barrier` arrived while the barrier was out: one message, the
/// traffic of 150 ms (the first fence) or 100 ms (later ones: they must
/// be reached within a [`STEP`]), and four times the traffic of the
/// barrier's round trip. Small on purpose for slow traffic: a fence that
/// is reached ends the drain without loss, one that is not ends in a
/// plain `UNSUB`. Pure.
pub fn margin(step: u32, per_s: f64, in_barrier: u64) -> u64 {
    let window = if step == 0 { 0.150 } else { 0.100 };
    let floor = 1;
    // Saturating: a rate is finite and not negative, but never trusted.
    let traffic = (per_s.max(0.0) * window).ceil().min(1e12) as u64;
    floor + traffic + 4 * in_barrier
}

/// How long a draining member waits with nothing arriving before it
/// checks that nothing is on its way and ends: three mean gaps of its
/// traffic, between 100 and 250 ms. Pure.
pub fn quiet(per_s: f64) -> Duration {
    let gaps = if per_s > 0.0 { 3.0 / per_s } else { 0.0 };
    Duration::from_secs_f64(gaps.clamp(0.100, 0.250))
}

/// A member's arrival rate: counts in the current and the previous
/// [`RATE_WINDOW`].
struct Rate {
    start: Instant,
    cur: u64,
    prev: u64,
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate {
            start: now,
            cur: 0,
            prev: 0,
        }
    }

    fn add(&mut self, n: u64, now: Instant) {
        let age = now.saturating_duration_since(self.start);
        if age >= RATE_WINDOW {
            self.prev = if age >= 2 * RATE_WINDOW { 0 } else { self.cur };
            self.cur = 0;
            self.start = now;
        }
        self.cur += n;
    }

    /// Messages a second over the two windows.
    fn per_s(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.start);
        if age >= 2 * RATE_WINDOW {
            return 0.0;
        }
        let (n, span) = if age >= RATE_WINDOW {
            (self.cur, age)
        } else {
            (self.cur + self.prev, RATE_WINDOW + age)
        };
        n as f64 / span.as_secs_f64().max(1e-3)
    }
}

/// Waits until the server has handled everything this connection sent
/// before: a message to a private inbox, subscribed on the same
/// connection, comes back (the server handles a connection's operations
/// in order, and sends it what it routed to it in order). Whatever the
/// server sent the connection before that message has then arrived.
pub async fn round_trip(client: &async_nats::Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("subscribing a round-trip inbox: {e}"))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| format!("publishing a round trip: {e}"))?;
    let back = tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await;
    if let Err(e) = echo.unsubscribe().await {
        tracing::debug!(error = %e, "ending a round-trip inbox failed");
    }
    match back {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("the connection closed during a round trip".into()),
        Err(_) => Err(format!(
            "the server did not answer a round trip within {ROUND_TRIP_TIMEOUT:?}"
        )),
    }
}

/// The forwarding task of one core subscription: messages go to `tx`
/// (`fix` adjusts each); `drain` starts the drain described above.
/// `connects` counts the connection's (re)connections: after a reconnect
/// the server counts deliveries from the renewed `SUB` while the client
/// goes on counting from the first, so a fence would be misplaced; such a
/// subscription is drained with a plain `UNSUB` (and a warning).
pub async fn forward(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    tx: mpsc::Sender<Message>,
    mut drain: oneshot::Receiver<()>,
    connects: tokio::sync::watch::Receiver<u64>,
    fix: impl Fn(async_nats::Message) -> Message,
) {
    let connection = *connects.borrow();
    // Messages taken out of `sub`: the count the client keeps for it.
    let mut seen: u64 = 0;
    let mut rate = Rate::new(Instant::now());
    loop {
        let m = tokio::select! {
            biased;
            r = &mut drain => {
                if r.is_ok() {
                    let fenced = *connects.borrow() == connection;
                    if !fenced {
                        tracing::warn!("draining a subscription whose connection was renewed: ended with a plain UNSUB (a message routed to it at this instant would be lost)");
                    }
                    let d = Draining {
                        sub,
                        held: VecDeque::new(),
                        seen,
                        ended: false,
                        rate,
                        fence: None,
                    };
                    drained(&client, d, fenced, &tx, &fix).await;
                } else if let Err(e) = sub.unsubscribe().await {
                    tracing::debug!(error = %e, "unsubscribing failed (connection gone)");
                }
                return;
            }
            m = sub.next() => m,
        };
        let Some(m) = m else { return };
        seen += 1;
        rate.add(1, Instant::now());
        if tx.send(fix(m)).await.is_err() {
            // The component dropped its subscription.
            if let Err(e) = sub.unsubscribe().await {
                tracing::debug!(error = %e, "unsubscribing failed (connection gone)");
            }
            return;
        }
    }
}

/// The subscription's client-side buffer and what has been counted out of it.
struct Draining {
    sub: async_nats::Subscriber,
    /// Messages taken out of `sub`, waiting for room in the channel.
    held: VecDeque<async_nats::Message>,
    /// Messages taken out of `sub` since it began (the client's count).
    seen: u64,
    /// `sub` has ended (the fence was reached, or it was unsubscribed).
    ended: bool,
    /// Arrivals (before the drain: what the component took).
    rate: Rate,
    /// The count the subscription ends at, once set.
    fence: Option<u64>,
}

impl Draining {
    fn arrived(&mut self, m: async_nats::Message) {
        self.seen += 1;
        self.rate.add(1, Instant::now());
        self.held.push_back(m);
    }

    /// Takes out of `sub` whatever has already arrived.
    fn take_arrived(&mut self) {
        while !self.ended {
            match self.sub.next().now_or_never() {
                Some(Some(m)) => self.arrived(m),
                Some(None) => self.ended = true,
                None => break,
            }
        }
    }

    /// Sends a barrier through the server and waits for it; what the
    /// server sent this subscription before it is then taken out. Returns
    /// how many messages arrived while it was out, or why it did not come
    /// back (the connection is gone).
    async fn barrier(&mut self, client: &async_nats::Client) -> Result<u64, String> {
        self.take_arrived();
        let before = self.seen;
        round_trip(client).await?;
        self.take_arrived();
        Ok(self.seen - before)
    }

    /// Sets the `step`-th fence, or says why it could not.
    async fn fence(&mut self, client: &async_nats::Client, step: u32) -> Result<(), String> {
        let during = self.barrier(client).await?;
        if self.ended {
            return Ok(());
        }
        // The rate over the last windows, not over the barrier's round
        // trip: messages arrive in bursts (a socket read's worth), so a
        // rate from a fraction of a millisecond overstates it many times,
        // and a fence that is never reached ends in a plain UNSUB.
        let per_s = self.rate.per_s(Instant::now());
        let max = self.seen + margin(step, per_s, during);
        // A fence only ever moves closer.
        if self.fence.is_some_and(|f| f <= max) {
            return Ok(());
        }
        self.sub
            .unsubscribe_after(max)
            .await
            .map_err(|e| format!("setting the fence: {e}"))?;
        self.fence = Some(max);
        Ok(())
    }

    /// Ends the subscription now because a round trip or fence failed,
    /// saying so: what the server still routes here may be lost.
    async fn end_because(&mut self, why: &str) {
        tracing::warn!(seen = self.seen, error = %why, "a draining subscription could not be fenced; ended with a plain UNSUB (a message routed to it meanwhile would be lost)");
        self.end().await;
    }

    /// Ends the subscription now (see the module's notes for the window).
    async fn end(&mut self) {
        if !self.ended {
            if let Err(e) = self.sub.unsubscribe().await {
                // The connection is gone: the server drops the
                // subscription with it.
                tracing::debug!(error = %e, "ending a drained subscription failed");
            }
            self.take_arrived();
            self.ended = true;
        }
    }
}

/// Drains `d.sub` (see the module's notes), forwarding everything it
/// delivers to `tx`; without `fenced`, ends it at once.
async fn drained(
    client: &async_nats::Client,
    mut d: Draining,
    fenced: bool,
    tx: &mpsc::Sender<Message>,
    fix: &impl Fn(async_nats::Message) -> Message,
) {
    if !fenced {
        d.end().await;
    } else if let Err(e) = d.fence(client, 0).await {
        d.end_because(&e).await;
    }
    let mut step = 0;
    let mut next_step = Instant::now() + STEP;
    let mut last_arrival = Instant::now();
    loop {
        if d.ended && d.held.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            permit = tx.reserve(), if !d.held.is_empty() => {
                let Ok(permit) = permit else {
                    // The component dropped its subscription.
                    d.end().await;
                    return;
                };
                if let Some(m) = d.held.pop_front() {
                    permit.send(fix(m));
                }
            }
            m = d.sub.next(), if !d.ended => match m {
                Some(m) => {
                    d.arrived(m);
                    last_arrival = Instant::now();
                }
                None => d.ended = true,
            },
            _ = tokio::time::sleep_until(last_arrival + quiet(d.rate.per_s(last_arrival))), if !d.ended => {
                // Quiet: confirmed by a barrier that nothing is on its way.
                match d.barrier(client).await {
                    Ok(0) => d.end().await,
                    Ok(_) => last_arrival = Instant::now(),
                    Err(e) => d.end_because(&e).await,
                }
            }
            _ = tokio::time::sleep_until(next_step), if !d.ended => {
                step += 1;
                if step >= STEPS {
                    tracing::warn!(
                        steps = STEPS,
                        seen = d.seen,
                        fence = ?d.fence,
                        per_s = d.rate.per_s(Instant::now()),
                        "a draining subscription did not reach its fence in time; ended with a plain UNSUB (a message routed to it at this instant would be lost)"
                    );
                    d.end().await;
                } else {
                    if let Err(e) = d.fence(client, step).await {
                        d.end_because(&e).await;
                    }
                    next_step = Instant::now() + STEP;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_allow_a_span_of_the_traffic() {
        assert_eq!(margin(0, 0.0, 0), 1);
        assert_eq!(margin(1, 0.0, 0), 1);
        // 20,000 messages a second: 150 ms of them past the first fence,
        // 100 ms past later ones.
        assert_eq!(margin(0, 20_000.0, 0), 1 + 3_000);
        assert_eq!(margin(1, 20_000.0, 0), 1 + 2_000);
        // Slow traffic: a few messages, reached soon.
        assert_eq!(margin(0, 10.0, 0), 1 + 2);
        // What arrived during the barrier's round trip counts four times.
        assert_eq!(margin(2, 0.0, 10), 41);
        // A rate that is not a number of messages adds nothing, and a
        // huge one saturates instead of wrapping.
        assert_eq!(margin(1, f64::NAN, 0), 1);
        assert_eq!(margin(1, -5.0, 0), 1);
        assert!(margin(0, f64::INFINITY, 0) >= 1_000_000_000_000);
    }

    #[test]
    fn quiet_follows_the_gaps_within_bounds() {
        assert_eq!(quiet(0.0), Duration::from_millis(100));
        assert_eq!(quiet(1_000.0), Duration::from_millis(100));
        assert_eq!(quiet(20.0), Duration::from_millis(150));
        assert_eq!(quiet(2.0), Duration::from_millis(250));
        assert_eq!(quiet(f64::NAN), Duration::from_millis(100));
    }

    #[test]
    fn the_rate_follows_the_last_two_windows() {
        let t0 = Instant::now();
        let mut r = Rate::new(t0);
        r.add(100, t0);
        // 100 in 125 ms of the first window (counted over 375 ms: the
        // empty previous window is included).
        let at = t0 + Duration::from_millis(125);
        assert!((r.per_s(at) - 100.0 / 0.375).abs() < 1e-6);
        r.add(50, t0 + Duration::from_millis(300));
        let at = t0 + Duration::from_millis(400);
        // Previous window 100, current 50, over 250 + 100 ms.
        assert!((r.per_s(at) - 150.0 / 0.350).abs() < 1e-6);
        // Two windows of silence: nothing.
        assert_eq!(r.per_s(t0 + Duration::from_secs(2)), 0.0);
    }
}
