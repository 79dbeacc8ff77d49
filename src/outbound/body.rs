//! Message bodies in memory: read only when a delivery holds its permits, counted while
//! they live, so memory stays within the attempts in flight however long the queue is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Engine;
use crate::spool::QueueId;

/// Message bodies held by deliveries: now, and the most at once since start. A body is read
/// only once its delivery holds its permits, so this stays within the attempts in flight
/// however long the queue is.
#[derive(Debug, Default)]
pub struct BodyGauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl BodyGauge {
    /// (bodies in memory now, the most at once)
    pub fn get(&self) -> (usize, usize) {
        (
            self.now.load(Ordering::SeqCst),
            self.peak.load(Ordering::SeqCst),
        )
    }
}

/// A message body read for a delivery, counted while it lives.
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    gauge: Arc<BodyGauge>,
}

impl Body {
    pub(super) async fn load(engine: &Engine, id: QueueId) -> std::io::Result<Body> {
        let bytes = engine.spool.load_message(id).await?;
        let now = engine.bodies.now.fetch_add(1, Ordering::SeqCst) + 1;
        engine.bodies.peak.fetch_max(now, Ordering::SeqCst);
        Ok(Body {
            bytes,
            gauge: engine.bodies.clone(),
        })
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.gauge.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The body, read now if this attempt has not read it yet.
pub(super) async fn body<'a>(
    engine: &Engine,
    id: QueueId,
    body: &'a mut Option<Body>,
) -> std::io::Result<&'a [u8]> {
    if body.is_none() {
        *body = Some(Body::load(engine, id).await?);
    }
    Ok(&body.as_ref().expect("loaded just above").bytes)
}
